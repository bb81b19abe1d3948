"""Composition and shielding (API.md §6.4, §13.8, §13.10; defects §14.5, §14.12).

* ``combine()``: the earliest deadline wins whatever the order; token cancellations keep
  their reason; combines nest; timeouts and conditions race correctly;
* ``shield()``: the shielded work completes although the parent is cancelled meanwhile
  (timeout or ``cancel()``), the statement after the shield block does not run, nested
  shields both complete, the parent block still ends with the native cancel exception;
* ``with_token`` + ``parent=`` works (0.1 raised ``AttributeError``), and ``cancel()`` of a
  ``with_token`` operation does not cancel the shared token.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hother.cancelable import (
    Cancellable,
    CancellationReason,
    CancellationToken,
    OperationStatus,
    current_operation,
)

LONG = 10.0


def cancelling() -> int:
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return 0
    return task.cancelling() if task is not None else 0


# ====================================================================== combine: deadlines


@pytest.mark.parametrize("order", ["short_last", "short_first"])
async def test_combine_shortest_deadline_wins(backend: Any, order: str) -> None:
    cancel_exc = backend.get_cancelled_exc_class()
    short, long_ = Cancellable.with_timeout(0.05), Cancellable.with_timeout(LONG)
    combined = long_.combine(short) if order == "short_last" else short.combine(long_)
    t0 = backend.current_time()
    with pytest.raises(cancel_exc):
        async with combined:
            await backend.sleep(LONG)
    elapsed = backend.current_time() - t0
    assert elapsed < LONG / 2
    assert combined.status == OperationStatus.CANCELLED
    assert combined.context.cancel_reason == CancellationReason.TIMEOUT
    assert combined.context.cancel_message == "Operation timed out"


async def test_combine_brief_example(backend: Any) -> None:
    """``with_timeout(0.3).combine(with_timeout(0.05))`` ends TIMEOUT well before 0.3 s."""
    cancel_exc = backend.get_cancelled_exc_class()
    combined = Cancellable.with_timeout(0.3).combine(Cancellable.with_timeout(0.05))
    t0 = backend.current_time()
    with pytest.raises(cancel_exc):
        async with combined:
            await backend.sleep(LONG)
    # the 0.05 s deadline fired, not the 0.3 s one (which would end at >= 0.3 s)
    assert backend.current_time() - t0 < 0.3
    assert combined.context.cancel_reason == CancellationReason.TIMEOUT


async def test_combine_three_timeouts(backend: Any) -> None:
    cancel_exc = backend.get_cancelled_exc_class()
    combined = (
        Cancellable.with_timeout(LONG)
        .combine(Cancellable.with_timeout(0.05))
        .combine(Cancellable.with_timeout(LONG * 2))
    )
    t0 = backend.current_time()
    with pytest.raises(cancel_exc):
        async with combined:
            await backend.sleep(LONG)
    assert backend.current_time() - t0 < LONG / 2
    assert combined.context.cancel_reason == CancellationReason.TIMEOUT


async def test_combined_completes_normally(backend: Any) -> None:
    token = CancellationToken()
    combined = Cancellable.with_timeout(LONG).combine(Cancellable.with_token(token))
    async with combined as op:
        assert current_operation() is combined
        await backend.sleep(0.01)
    assert op is combined
    assert combined.is_completed
    assert not token.is_cancelled


# ====================================================================== combine: tokens


async def test_combine_token_cancellation_interrupts(backend: Any) -> None:
    before = cancelling()
    cancel_exc = backend.get_cancelled_exc_class()
    token = CancellationToken()
    combined = Cancellable.with_timeout(1.0).combine(Cancellable.with_token(token))
    entered = backend.create_event()

    async def canceller() -> None:
        await entered.wait()
        await token.cancel(CancellationReason.MANUAL, "user stop")

    t0 = backend.current_time()
    async with backend.create_task_group() as tg:
        tg.start_soon(canceller)
        with pytest.raises(cancel_exc):
            async with combined:
                entered.set()
                await backend.sleep(LONG)
    assert backend.current_time() - t0 < 0.9  # well before the 1.0 s timeout
    assert token.reason == CancellationReason.MANUAL
    assert combined.token.is_cancelled
    assert combined.token.reason == CancellationReason.MANUAL  # preserved, not PARENT
    assert combined.context.cancel_reason == CancellationReason.MANUAL
    assert combined.context.cancel_message == "user stop"
    assert cancelling() == before


async def test_combine_of_combine_interrupted_by_innermost_token(backend: Any) -> None:
    cancel_exc = backend.get_cancelled_exc_class()
    inner_token = CancellationToken()
    chained = (
        Cancellable.with_token(inner_token)
        .combine(Cancellable.with_timeout(LONG))
        .combine(Cancellable.with_timeout(LONG))
    )
    entered = backend.create_event()

    async def canceller() -> None:
        await entered.wait()
        await inner_token.cancel(CancellationReason.CONDITION, "innermost")

    async with backend.create_task_group() as tg:
        tg.start_soon(canceller)
        with pytest.raises(cancel_exc):
            async with chained:
                entered.set()
                await backend.sleep(LONG)
    assert chained.is_cancelled
    assert chained.context.cancel_reason == CancellationReason.CONDITION
    assert chained.context.cancel_message == "innermost"


async def test_combine_cancelling_an_original_operation(backend: Any) -> None:
    """``cancel()`` on one of the combined (never entered) operations reaches the combined."""
    cancel_exc = backend.get_cancelled_exc_class()
    a = Cancellable.with_timeout(LONG)
    b = Cancellable()
    combined = a.combine(b)
    with pytest.raises(cancel_exc):
        async with combined:
            await b.cancel(CancellationReason.SIGNAL, "b stopped")
            await backend.sleep(LONG)
    assert combined.context.cancel_reason == CancellationReason.SIGNAL
    assert combined.context.cancel_message == "b stopped"


async def test_combine_two_tokens_either_cancels(backend: Any) -> None:
    cancel_exc = backend.get_cancelled_exc_class()
    for which in (0, 1):
        tokens = [CancellationToken(), CancellationToken()]
        combined = Cancellable.with_token(tokens[0]).combine(Cancellable.with_token(tokens[1]))
        with pytest.raises(cancel_exc):
            async with combined:
                await tokens[which].cancel(CancellationReason.MANUAL, f"token {which}")
                await backend.sleep(LONG)
        assert combined.context.cancel_message == f"token {which}"
        assert not tokens[1 - which].is_cancelled


async def test_combine_does_not_carry_callbacks(backend: Any) -> None:
    events: list[str] = []
    a = Cancellable().on_start(lambda ctx: events.append("a start"))
    a.on_complete(lambda ctx: events.append("a complete"))
    combined = a.combine(Cancellable())
    async with combined:
        pass
    assert events == []
    assert a.status == OperationStatus.PENDING


async def test_unrelated_token_does_not_affect_other_block(backend: Any) -> None:
    unrelated = CancellationToken()
    mine = CancellationToken()
    async with Cancellable.with_token(mine) as op:
        await unrelated.cancel()
        await backend.sleep(0.01)
    assert op.is_completed
    assert not mine.is_cancelled


# ====================================================================== combine: conditions


async def test_combine_timeout_beats_slow_condition(backend: Any) -> None:
    cancel_exc = backend.get_cancelled_exc_class()
    checks = 0

    def slow_condition() -> bool:
        nonlocal checks
        checks += 1
        return checks >= 50  # would need ~1 s at 0.02 s per check

    combined = Cancellable.with_timeout(0.1).combine(
        Cancellable.with_condition(slow_condition, check_interval=0.02)
    )
    with pytest.raises(cancel_exc):
        async with combined:
            await backend.sleep(LONG)
    assert combined.context.cancel_reason == CancellationReason.TIMEOUT
    assert 0 < checks < 50


async def test_combine_fast_condition_beats_timeout(backend: Any) -> None:
    cancel_exc = backend.get_cancelled_exc_class()
    checks = 0

    def fast_condition() -> bool:
        nonlocal checks
        checks += 1
        return checks >= 2

    combined = Cancellable.with_timeout(LONG).combine(
        Cancellable.with_condition(fast_condition, check_interval=0.01, condition_name="fast")
    )
    t0 = backend.current_time()
    with pytest.raises(cancel_exc):
        async with combined:
            await backend.sleep(LONG)
    assert backend.current_time() - t0 < LONG / 2
    assert combined.context.cancel_reason == CancellationReason.CONDITION
    assert combined.context.cancel_message == "Condition 'fast' met after 2 checks"


# ====================================================================== with_token + parent


async def test_with_token_and_parent(backend: Any) -> None:
    cancel_exc = backend.get_cancelled_exc_class()
    # parent cancellation reaches a with_token child (0.1: AttributeError on enter)
    parent = Cancellable(name="parent")
    shared = CancellationToken()
    child = Cancellable.with_token(shared, parent=parent)
    with pytest.raises(cancel_exc):
        async with parent:
            async with child:
                await parent.cancel()
                await backend.sleep(LONG)
    assert child.context.cancel_reason == CancellationReason.PARENT
    assert not shared.is_cancelled  # propagation is downward only

    # the shared token still reaches a with_token child that has a parent
    parent2 = Cancellable(name="parent2")
    shared2 = CancellationToken()
    child2 = Cancellable.with_token(shared2, parent=parent2)
    async with parent2:
        with pytest.raises(cancel_exc):
            async with child2:
                await shared2.cancel(CancellationReason.SIGNAL, "shared")
                await backend.sleep(LONG)
        assert not parent2.token.is_cancelled
    assert child2.context.cancel_reason == CancellationReason.SIGNAL
    assert parent2.is_completed


async def test_cancel_of_with_token_operation_leaves_shared_token(backend: Any) -> None:
    cancel_exc = backend.get_cancelled_exc_class()
    shared = CancellationToken()
    first = Cancellable.with_token(shared, name="first")
    with pytest.raises(cancel_exc):
        async with first:
            await first.cancel(CancellationReason.MANUAL, "only me")
            await backend.sleep(LONG)
    assert first.context.cancel_message == "only me"
    assert not shared.is_cancelled
    # another user of the shared token is unaffected
    async with Cancellable.with_token(shared, name="second") as second:
        await backend.sleep(0.01)
    assert second.is_completed


async def test_hierarchy_parent_cancel_reaches_every_descendant(backend: Any) -> None:
    cancel_exc = backend.get_cancelled_exc_class()
    root = Cancellable(name="root")
    ready = backend.create_event()
    entered = 0
    leaves: list[Cancellable] = []

    async def branch(parent: Cancellable, depth: int) -> None:
        nonlocal entered
        op = Cancellable(name=f"d{depth}", parent=parent)
        try:
            async with op:
                if depth == 3:
                    leaves.append(op)
                    entered += 1
                    if entered == 4:
                        ready.set()
                    await backend.sleep(LONG)
                else:
                    async with backend.create_task_group() as tg:
                        tg.start_soon(branch, op, depth + 1)
                        tg.start_soon(branch, op, depth + 1)
        except cancel_exc:
            assert op.context.cancel_reason == CancellationReason.PARENT
            raise

    with pytest.raises(cancel_exc):
        async with root:
            async with backend.create_task_group() as tg:
                tg.start_soon(branch, root, 2)
                tg.start_soon(branch, root, 2)
                await ready.wait()
                await root.cancel(CancellationReason.MANUAL, "shutdown")
                assert all(leaf.token.is_cancelled for leaf in leaves)
                await backend.sleep(LONG)
    assert len(leaves) == 4
    assert all(leaf.context.cancel_reason == CancellationReason.PARENT for leaf in leaves)
    assert root.context.cancel_reason == CancellationReason.MANUAL


# ====================================================================== shield (§13.10)


async def test_shield_handle(backend: Any) -> None:
    async with Cancellable(name="p") as parent:
        async with parent.shield() as handle:
            assert handle.status == OperationStatus.SHIELDED
            assert handle.context.metadata["shielded"] is True
            assert handle.context.parent_id == parent.operation_id
            assert handle is not parent
            await backend.sleep(0)
    assert parent.is_completed


async def test_shield_survives_parent_timeout(backend: Any) -> None:
    before = cancelling()
    cancel_exc = backend.get_cancelled_exc_class()
    steps: list[str] = []
    with pytest.raises(cancel_exc):
        async with Cancellable.with_timeout(0.05, name="parent") as parent:
            async with parent.shield():
                await backend.sleep(0.15)  # the 0.05 s deadline passes meanwhile
                steps.append("shielded work done")
            steps.append("after shield")  # must not run
    assert steps == ["shielded work done"]
    assert parent.status == OperationStatus.CANCELLED
    assert parent.context.cancel_reason == CancellationReason.TIMEOUT
    assert cancelling() == before


async def test_nested_shields_complete_in_order(backend: Any) -> None:
    cancel_exc = backend.get_cancelled_exc_class()
    steps: list[str] = []
    with pytest.raises(cancel_exc):
        async with Cancellable.with_timeout(0.05) as parent:
            async with parent.shield() as outer_handle:
                async with outer_handle.shield():
                    await backend.sleep(0.1)
                    steps.append("inner shield")
                await backend.sleep(0.02)
                steps.append("outer shield")
            steps.append("after shields")  # must not run
    assert steps == ["inner shield", "outer shield"]
    assert parent.context.cancel_reason == CancellationReason.TIMEOUT


async def test_parent_cancel_inside_shield_does_not_interrupt_it(backend: Any) -> None:
    before = cancelling()
    cancel_exc = backend.get_cancelled_exc_class()
    steps: list[str] = []
    with pytest.raises(cancel_exc):
        async with Cancellable(name="parent") as parent:
            async with parent.shield():
                await parent.cancel(CancellationReason.MANUAL, "cancel inside shield")
                await backend.sleep(0.02)
                steps.append("shield finished")
            steps.append("after shield")  # must not run
    assert steps == ["shield finished"]
    assert parent.context.cancel_reason == CancellationReason.MANUAL
    assert parent.context.cancel_message == "cancel inside shield"
    assert cancelling() == before


async def test_shield_from_another_task_cancel(backend: Any) -> None:
    cancel_exc = backend.get_cancelled_exc_class()
    steps: list[str] = []
    in_shield = backend.create_event()
    cancelled = backend.create_event()
    op = Cancellable(name="parent")

    async def canceller() -> None:
        await in_shield.wait()
        await op.cancel()
        cancelled.set()

    async with backend.create_task_group() as tg:
        tg.start_soon(canceller)
        with pytest.raises(cancel_exc):
            async with op:
                async with op.shield():
                    in_shield.set()
                    await cancelled.wait()  # an await while the parent is cancelled
                    await backend.sleep(0.01)
                    steps.append("shield done")
                steps.append("after")  # must not run
    assert steps == ["shield done"]


async def test_shield_without_cancellation_continues(backend: Any) -> None:
    steps: list[str] = []
    async with Cancellable() as op:
        async with op.shield():
            await backend.sleep(0)
            steps.append("shielded")
        steps.append("after shield")
    assert steps == ["shielded", "after shield"]
    assert op.is_completed


async def test_shield_protects_against_outer_scope(backend: Any) -> None:
    steps: list[str] = []
    with backend.create_cancel_scope() as outer:
        async with Cancellable() as op:
            async with op.shield():
                outer.cancel()
                await backend.sleep(0.02)
                steps.append("shielded")
            steps.append("after")  # must not run
    assert outer.cancelled_caught
    assert steps == ["shielded"]
    assert op.context.cancel_reason == CancellationReason.MANUAL
