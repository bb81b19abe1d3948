"""The C scope (asyncio backend) next to asyncio's and anyio's own cancellation machinery.

Each test checks that ``Task.cancelling()`` is back to its previous value afterwards, and that
cancellations that do not belong to our scope (``asyncio.timeout``, ``asyncio.TaskGroup``,
an external ``task.cancel()``, an ``anyio.CancelScope``) are never swallowed by it.
"""

from __future__ import annotations

import asyncio
import math
import sys

import anyio
import pytest

from hother.cancelable import _engine
from hother.cancelable.backends import get_backend
from hother.cancelable.backends.asyncio_backend import AsyncioTaskGroup

pytestmark = pytest.mark.modes("asyncio", "uvloop", reason="asyncio interop of the C scope")

LONG = 10.0
Scope = _engine.CancelScope


def cancelling() -> int:
    task = asyncio.current_task()
    assert task is not None
    return task.cancelling()


def now() -> float:
    return asyncio.get_running_loop().time()


# -- asyncio.timeout -----------------------------------------------------------------------


async def test_our_scope_inside_asyncio_timeout() -> None:
    base = cancelling()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.02):
            with Scope() as scope:
                await asyncio.sleep(LONG)
    assert not scope.cancel_called and not scope.cancelled_caught  # not ours: propagated
    assert cancelling() == base
    await asyncio.sleep(0)


async def test_asyncio_timeout_inside_our_cancelled_scope() -> None:
    base = cancelling()
    with Scope() as scope:
        async with asyncio.timeout(LONG) as timeout:
            scope.cancel()
            await asyncio.sleep(LONG)
    assert scope.cancelled_caught
    assert not timeout.expired()  # our cancellation was not turned into a TimeoutError
    assert cancelling() == base
    await asyncio.sleep(0)


async def test_asyncio_timeout_inside_our_scope_expires_first() -> None:
    base = cancelling()
    with Scope(deadline=now() + LONG) as scope:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await asyncio.sleep(LONG)
        await asyncio.sleep(0)
    assert not scope.cancel_called
    assert cancelling() == base


async def test_our_deadline_and_asyncio_timeout_race_on_the_same_await() -> None:
    base = cancelling()
    with Scope(deadline=now() + 0.01) as scope:
        async with asyncio.timeout(LONG):
            await asyncio.sleep(LONG)
    assert scope.cancelled_caught
    assert cancelling() == base


# -- asyncio.TaskGroup ---------------------------------------------------------------------


async def test_our_scope_around_asyncio_taskgroup() -> None:
    base = cancelling()
    cancelled: list[str] = []

    async def child(name: str) -> None:
        try:
            await asyncio.sleep(LONG)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    with Scope() as scope:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(child("a"))
            tg.create_task(child("b"))
            await asyncio.sleep(0)
            scope.cancel()
            await asyncio.sleep(LONG)
    assert scope.cancelled_caught
    assert sorted(cancelled) == ["a", "b"]
    assert cancelling() == base
    await asyncio.sleep(0)


async def test_our_scope_inside_an_asyncio_taskgroup_child() -> None:
    async def scenario(with_scope: bool) -> tuple[int, bool, bool]:
        """Returns (host cancelling() afterwards, child task cancelled, scope caught)."""
        child_scopes: list[_engine.CancelScope] = []

        async def child() -> None:
            if with_scope:
                with Scope() as scope:
                    child_scopes.append(scope)
                    await asyncio.sleep(LONG)
            else:
                await asyncio.sleep(LONG)

        async def failing() -> None:
            await asyncio.sleep(0)
            raise ValueError("sibling failed")

        with pytest.raises(ExceptionGroup) as info:
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(child())
                tg.create_task(failing())
        assert [type(e) for e in info.value.exceptions] == [ValueError]
        caught = bool(child_scopes) and child_scopes[0].cancelled_caught
        return cancelling(), task.cancelled(), caught

    loop = asyncio.get_running_loop()
    reference = await loop.create_task(scenario(with_scope=False))
    ours = await loop.create_task(scenario(with_scope=True))
    # The TaskGroup's task.cancel() was not swallowed by the child's scope, and the host's
    # cancelling() count is whatever asyncio itself leaves (3.11 leaves 1 after a child error).
    assert ours == (reference[0], True, False)
    assert reference[1] is True


async def test_asyncio_taskgroup_inside_our_task_group() -> None:
    base = cancelling()
    async with AsyncioTaskGroup() as ours:
        async with asyncio.TaskGroup() as theirs:
            theirs.create_task(asyncio.sleep(LONG))
            ours.start_soon(asyncio.sleep, LONG)
            await asyncio.sleep(0)
            ours.cancel_scope.cancel()
    assert ours.cancel_scope.cancelled_caught
    assert cancelling() == base


# -- anyio.CancelScope ---------------------------------------------------------------------


async def test_anyio_scope_inside_ours() -> None:
    base = cancelling()
    with Scope() as ours:
        with anyio.CancelScope() as theirs:
            ours.cancel()
            await asyncio.sleep(LONG)
    assert ours.cancelled_caught and not theirs.cancelled_caught
    assert cancelling() == base
    await asyncio.sleep(0)


async def test_ours_inside_anyio_scope() -> None:
    base = cancelling()
    with anyio.CancelScope() as theirs:
        with Scope() as ours:
            theirs.cancel()
            await asyncio.sleep(LONG)
    assert theirs.cancelled_caught and not ours.cancelled_caught
    assert cancelling() == base
    await asyncio.sleep(0)


async def test_anyio_deadline_inside_ours() -> None:
    base = cancelling()
    with Scope(deadline=now() + LONG) as ours:
        with anyio.move_on_after(0.01) as theirs:
            await asyncio.sleep(LONG)
        await asyncio.sleep(0)
    assert theirs.cancelled_caught and not ours.cancel_called
    assert cancelling() == base


# -- external task.cancel() ----------------------------------------------------------------


async def test_external_cancel_during_our_cancelled_scope_propagates() -> None:
    entered = asyncio.Event()
    scopes: list[_engine.CancelScope] = []

    async def victim() -> None:
        with Scope() as scope:
            scopes.append(scope)
            scope.cancel()
            try:
                await asyncio.sleep(0)  # our own cancellation
            except asyncio.CancelledError:
                pass
            entered.set()
            await asyncio.sleep(LONG)  # cancelled by both: us and the external cancel()

    task = asyncio.get_running_loop().create_task(victim())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert not scopes[0].cancelled_caught


async def test_external_cancel_inside_shielded_scope_propagates() -> None:
    entered = asyncio.Event()

    async def victim() -> None:
        with Scope(shield=True):
            entered.set()
            await asyncio.sleep(LONG)

    task = asyncio.get_running_loop().create_task(victim())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_external_cancel_while_our_task_group_waits() -> None:
    started = asyncio.Event()
    cancelled_children: list[bool] = []

    async def child() -> None:
        try:
            started.set()
            await asyncio.sleep(LONG)
        except asyncio.CancelledError:
            cancelled_children.append(True)
            raise

    async def host() -> None:
        async with get_backend("asyncio").create_task_group() as tg:
            tg.start_soon(child)

    task = asyncio.get_running_loop().create_task(host())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert cancelled_children == [True]


async def test_uncancel_balance_after_many_scopes() -> None:
    base = cancelling()
    for i in range(50):
        with Scope(deadline=-1 if i % 2 else math.inf) as scope:
            if i % 3 == 0:
                scope.cancel()
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
    assert cancelling() == base


# -- the acceptance test: one timer per loop -----------------------------------------------


def _engine_handles(loop: asyncio.AbstractEventLoop) -> int:
    scheduled = getattr(loop, "_scheduled", None)
    assert scheduled is not None
    return sum(1 for handle in scheduled if not handle.cancelled())


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython event loop internals")
async def test_thousand_deadlines_one_timer(run_mode: str) -> None:
    loop = asyncio.get_running_loop()
    release = asyncio.Event()
    inside = 0
    all_inside = asyncio.Event()
    n = 1000
    before = _engine_handles(loop) if run_mode == "asyncio" else 0
    base = now()

    async def worker(i: int) -> bool:
        nonlocal inside
        with Scope(deadline=base + 100 + i * 0.01) as scope:
            inside += 1
            if inside == n:
                all_inside.set()
            await release.wait()
        return bool(scope.cancel_called)

    tasks = [loop.create_task(worker(i)) for i in range(n)]
    await all_inside.wait()
    stats = _engine.loop_stats()
    assert stats["armed_timers"] == 1
    assert stats["deadlines"] >= n
    if run_mode == "asyncio":  # uvloop keeps its timers in C
        assert _engine_handles(loop) - before <= 1
    release.set()
    assert not any(await asyncio.gather(*tasks))
    await asyncio.sleep(0)
    assert _engine.loop_stats()["active_scopes"] == 0
