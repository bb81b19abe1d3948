"""The lazy trio scope of the trio fast path.

A ``Cancellable`` block on trio enters no ``trio.CancelScope``: it records its task and the
task's ``CancelStatus``, and gets its scope when it first needs one (a cancel, its deadline,
``op.scope``). The scope then goes where entering it at the start of the block would have
put it (core/cancellable.py: ``_trio_attach_scope``). These tests pin that placement, with
what trio itself must see: inner scopes and nurseries cancelled through it, shields
honoured, nested blocks cancelled in either order, a block moved by ``TaskStatus.started()``,
a cancel from a plain thread, and the eager scope when the lazy one is turned off.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from hother.cancelable import Cancellable, _engine
from hother.cancelable.core.models import CancellationReason, OperationStatus


def status() -> Any:
    return trio.lowlevel.current_task()._cancel_status


def status_of(scope: Any) -> Any:
    """The CancelStatus of an entered trio scope."""
    return scope._cancel_status


def test_a_block_that_is_not_cancelled_touches_no_trio_state() -> None:
    async def main() -> None:
        before = status()
        async with Cancellable.with_timeout(30) as op:
            assert status() is before  # no CancelStatus of ours
            assert op._scope is None
            await trio.lowlevel.checkpoint()
        assert status() is before
        assert op.status == OperationStatus.COMPLETED
        assert op.scope is None  # it never needed one

    trio.run(main)


def test_op_scope_makes_the_scope_where_an_eager_one_would_be() -> None:
    async def main() -> None:
        before = status()
        async with Cancellable() as op:
            with trio.CancelScope() as inner:
                scope = op.scope
                assert isinstance(scope, trio.CancelScope)
                assert op.scope is scope
                ours = scope._cancel_status
                assert ours._parent is before
                assert status_of(inner)._parent is ours
                assert status() is inner._cancel_status
            assert status() is ours
            assert not scope.cancel_called
        assert status() is before
        assert op.status == OperationStatus.COMPLETED

    trio.run(main)


def test_a_cancel_reaches_inner_scopes_and_nursery_children_but_not_shields() -> None:
    async def main() -> None:
        children_cancelled: list[str] = []
        shielded_ran: list[str] = []

        async def child(name: str, started: trio.Event) -> None:
            try:
                started.set()
                await trio.sleep_forever()
            except trio.Cancelled:
                children_cancelled.append(name)
                raise

        caught: BaseException | None = None
        with trio.fail_after(10):  # a guard against a hang
            try:
                async with Cancellable() as op:
                    with trio.CancelScope():
                        async with trio.open_nursery() as nursery:
                            for name in ("a", "b"):
                                started = trio.Event()
                                nursery.start_soon(child, name, started)
                                await started.wait()
                            op.cancel_sync()
                            with trio.CancelScope(shield=True):
                                await trio.lowlevel.checkpoint()  # not cancelled: shielded
                                shielded_ran.append("shield")
                            await trio.sleep_forever()
            except BaseException as exc:  # the nursery's group of Cancelled, re-raised
                caught = exc
        assert isinstance(caught, BaseExceptionGroup)
        assert caught.split(trio.Cancelled)[1] is None  # nothing but cancellations
        assert sorted(children_cancelled) == ["a", "b"]
        assert shielded_ran == ["shield"]
        assert op.status == OperationStatus.CANCELLED
        assert op._cancel_reason == CancellationReason.MANUAL

    trio.run(main)


@pytest.mark.parametrize("order", ["outer first", "inner first"])
def test_nested_blocks_cancelled_in_either_order(order: str) -> None:
    async def main() -> None:
        outer, inner = Cancellable(), Cancellable()
        with trio.fail_after(10):
            before = status()
            with pytest.raises(trio.Cancelled):
                async with outer:
                    async with inner:
                        with trio.CancelScope() as x:
                            first, second = (
                                (outer, inner) if order == "outer first" else (inner, outer)
                            )
                            await first.cancel()
                            await second.cancel()
                            # the chain is the one eager scopes give: x -> inner -> outer
                            inner_status = inner.scope._cancel_status
                            outer_status = outer.scope._cancel_status
                            assert status_of(x)._parent is inner_status
                            assert inner_status._parent is outer_status
                            assert outer_status._parent is before
                            await trio.sleep_forever()
            assert status() is before
        assert outer.status == inner.status == OperationStatus.CANCELLED

    trio.run(main)


def test_an_outer_block_cancelled_after_the_inner_one_was_entered() -> None:
    async def main() -> None:
        outer = Cancellable()
        reached: list[str] = []
        with trio.fail_after(10):
            before = status()
            with pytest.raises(trio.Cancelled):
                async with outer:
                    async with Cancellable() as inner:
                        await outer.cancel()
                        assert status_of(inner.scope)._parent is outer.scope._cancel_status
                        reached.append("inner body")
                        await trio.lowlevel.checkpoint()
                        reached.append("not reached")
            assert status() is before
        assert reached == ["inner body"]
        assert inner.status == OperationStatus.CANCELLED

    trio.run(main)


def test_a_block_in_a_started_task_is_cancelled_after_started() -> None:
    async def main() -> None:
        outcome: dict[str, Any] = {}

        async def server(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            try:
                async with Cancellable() as op:
                    outcome["op"] = op
                    task_status.started()  # moves this task to the target nursery
                    await trio.sleep_forever()
            except trio.Cancelled:
                outcome["cancelled"] = True
                raise

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(server)
                await outcome["op"].cancel()
        assert outcome["cancelled"] is True
        assert outcome["op"].status == OperationStatus.CANCELLED

    trio.run(main)


def test_a_cancel_from_a_plain_thread() -> None:
    async def main() -> None:
        entered = threading.Event()
        ops: list[Cancellable] = []

        def canceller() -> None:
            entered.wait()
            ops[0].cancel_sync()

        thread = threading.Thread(target=canceller)
        thread.start()
        try:
            with trio.fail_after(10):
                with pytest.raises(trio.Cancelled):
                    async with Cancellable() as op:
                        ops.append(op)
                        entered.set()
                        await trio.sleep_forever()
        finally:
            thread.join()
        assert op.status == OperationStatus.CANCELLED
        assert isinstance(op.scope, trio.CancelScope) and op.scope.cancel_called

    trio.run(main)


def test_a_token_cancelled_before_enter_cancels_at_the_first_checkpoint() -> None:
    async def main() -> None:
        op = Cancellable()
        op.cancel_sync()
        reached: list[str] = []
        with pytest.raises(trio.Cancelled):
            async with op:
                reached.append("body")
                await trio.lowlevel.checkpoint()
                reached.append("not reached")
        assert reached == ["body"]
        assert op.status == OperationStatus.CANCELLED

    trio.run(main)


def test_op_scope_from_another_thread_is_refused_while_the_block_runs() -> None:
    async def main() -> None:
        errors: list[BaseException] = []
        async with Cancellable() as op:

            def read() -> None:
                try:
                    op.scope  # noqa: B018
                except RuntimeError as err:
                    errors.append(err)

            await trio.to_thread.run_sync(read)
            assert op._scope is None  # nothing was made
        assert len(errors) == 1 and "thread of its trio run" in str(errors[0])

    trio.run(main)


def test_blocks_exited_out_of_order_are_refused() -> None:
    async def main() -> None:
        outer, inner = Cancellable(), Cancellable()
        await outer.__aenter__()
        await inner.__aenter__()
        with pytest.raises(RuntimeError, match="out of order"):
            await outer.__aexit__(None, None, None)

    trio.run(main)


@pytest.fixture
def eager() -> Iterator[None]:
    was = _engine._set_trio_lazy(False)
    try:
        yield
    finally:
        _engine._set_trio_lazy(was)


@pytest.mark.usefixtures("eager")
def test_with_the_lazy_scope_off_the_block_enters_trio_cancel_scope() -> None:
    async def main() -> None:
        before = status()
        async with Cancellable() as op:
            assert status() is not before  # trio's scope, entered at enter
            assert status()._scope is op._scope
        with trio.fail_after(10):
            with pytest.raises(trio.Cancelled):
                async with Cancellable() as op:
                    await op.cancel()
                    await trio.sleep_forever()
            with pytest.raises(trio.Cancelled):
                async with Cancellable.with_timeout(0.01) as timed:
                    await trio.sleep_forever()
        assert op.status == OperationStatus.CANCELLED
        assert timed._cancel_reason == CancellationReason.TIMEOUT
        assert status() is before

    trio.run(main)


# -- differential: lazy scopes behave as eagerly entered ones -------------------------------------
#
# Random single-task programs: nested blocks (a Cancellable, an expired with_timeout, a trio
# scope, a shielded trio scope) with checkpoints, cancels of open blocks and reads of op.scope.
# The trace (which checkpoint raised, which block an exception left) and the final statuses
# must be the same with the lazy scope as with trio.CancelScope entered at every enter.

KINDS = ("op", "op", "expired", "scope", "shield")


def _program(rng: random.Random, depth: int = 0) -> list[Any]:
    items: list[Any] = []
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        if roll < 0.35 and depth < 4:
            items.append(("block", rng.choice(KINDS), _program(rng, depth + 1)))
        elif roll < 0.6:
            items.append(("checkpoint",))
        elif roll < 0.85:
            items.append(("cancel", rng.randint(0, depth)))  # an open block, by its depth
        else:
            items.append(("read_scope", rng.randint(0, depth)))
    return items


async def _run(items: list[Any], stack: list[Any], trace: list[Any], ops: list[Any]) -> None:
    for item in items:
        if item[0] == "checkpoint":
            trace.append(("checkpoint", len(stack)))
            await trio.lowlevel.checkpoint()
        elif item[0] in ("cancel", "read_scope"):
            if not stack:
                continue
            target = stack[min(item[1], len(stack) - 1)]
            if isinstance(target, Cancellable):
                if item[0] == "cancel":
                    target.cancel_sync()
                else:
                    assert isinstance(target.scope, trio.CancelScope)
            elif item[0] == "cancel":
                target.cancel()
        else:
            await _block(item[1], item[2], stack, trace, ops)


async def _block(
    kind: str, body: list[Any], stack: list[Any], trace: list[Any], ops: list[Any]
) -> None:
    depth = len(stack)
    try:
        if kind in ("op", "expired"):
            op = Cancellable() if kind == "op" else Cancellable.with_timeout(1e-9)
            ops.append(op)
            async with op:
                stack.append(op)
                try:
                    await _run(body, stack, trace, ops)
                finally:
                    stack.pop()
        else:
            with trio.CancelScope(shield=kind == "shield") as scope:
                stack.append(scope)
                try:
                    await _run(body, stack, trace, ops)
                finally:
                    stack.pop()
            trace.append(("caught" if scope.cancelled_caught else "left", depth))
            return
        trace.append(("left", depth))
    except trio.Cancelled:
        trace.append(("cancelled", depth))
        raise


def _trace_of(program: list[Any]) -> list[Any]:
    trace: list[Any] = []
    ops: list[Any] = []

    async def main() -> None:
        before = status()
        async with Cancellable.with_timeout(30):  # the run's deadline service exists
            pass
        try:
            await _block("scope", program, [], trace, ops)
        except trio.Cancelled:
            trace.append(("escaped",))
        assert status() is before
        await trio.lowlevel.checkpoint()  # nothing pending leaks out

    trio.run(main)
    trace.extend((op.status.value, op._cancel_reason) for op in ops)
    return trace


def test_random_programs_behave_the_same_with_lazy_and_eager_scopes() -> None:
    rng = random.Random(20261206)  # fixed: the same programs on every run
    programs = [_program(rng) for _ in range(600)]
    lazy = [_trace_of(p) for p in programs]
    was = _engine._set_trio_lazy(False)
    try:
        eager = [_trace_of(p) for p in programs]
    finally:
        _engine._set_trio_lazy(was)
    for program, a, b in zip(programs, lazy, eager, strict=True):
        assert a == b, program


@pytest.mark.parametrize("where", ["status init", "task move", "child move"])
def test_a_failed_attach_leaves_trio_tree_whole(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory running out in one of trio's set operations while the scope is made: the error
    propagates and trio's status tree is as it was before (the next attempt works)."""
    run = trio._core._run
    armed = [False]

    def fail_now() -> bool:
        if armed[0]:
            armed[0] = False
            return True
        return False

    real_recalc = run.CancelStatus.recalculate
    real_activate = run.Task._activate_cancel_status
    real_parent = run.CancelStatus.parent

    def recalculate(self: Any) -> None:  # runs after the new status joined its parent
        if where == "status init" and fail_now():
            raise MemoryError
        real_recalc(self)

    def activate(self: Any, cancel_status: Any) -> None:
        if where == "task move" and fail_now():  # set.add failing midway
            self._cancel_status._tasks.remove(self)
            self._cancel_status = cancel_status
            raise MemoryError
        real_activate(self, cancel_status)

    def set_parent(self: Any, parent: Any) -> None:
        if where == "child move" and fail_now():  # set.add failing midway
            self._parent._children.remove(self)
            self._parent = parent
            raise MemoryError
        real_parent.fset(self, parent)

    monkeypatch.setattr(run.CancelStatus, "recalculate", recalculate)
    monkeypatch.setattr(run.Task, "_activate_cancel_status", activate)
    monkeypatch.setattr(run.CancelStatus, "parent", property(real_parent.fget, set_parent))

    async def main() -> None:
        task = trio.lowlevel.current_task()
        before = status()
        children = set(before._children)
        async with Cancellable() as op:
            inner = trio.CancelScope()
            if where == "child move":  # an inner scope to move under ours
                inner.__enter__()
            at = status_of(inner) if where == "child move" else before
            armed[0] = True
            with pytest.raises(MemoryError):
                op.scope  # noqa: B018
            # the tree is as it was: the task (or the inner status) right under `before`
            assert status() is at and task in at._tasks
            assert at is before or status_of(inner)._parent is before
            assert set(before._children) - {at} == children
            scope = op.scope  # the next attempt works
            assert status_of(scope)._parent is before
            if where == "child move":
                assert status_of(inner)._parent is status_of(scope)
                inner.__exit__(None, None, None)
        assert status() is before and set(before._children) == children

    trio.run(main)
