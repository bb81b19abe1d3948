"""``AsyncioTaskGroup`` follows trio's nursery semantics (the points the parity fuzzer found).

The trio-semantics tests also run in the ``trio`` mode (anyio's task group on a trio
nursery): the expected values are trio's own. The asyncio-only tests cover what trio has no
equivalent for: a plain ``Task.cancel()`` of the host, ``asyncio.timeout`` around a group,
and the bare ``CancelledError`` that leaves a group when only cancellations were collected.

All but the busy-loop check run on the virtual clock (no wall-clock timing).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hother.cancelable.backends.asyncio_backend import AsyncioTaskGroup

TRIO_SEMANTICS = pytest.mark.modes(
    "asyncio", "trio", reason="trio nursery semantics (anyio on asyncio differs by design)"
)
ASYNCIO_ONLY = pytest.mark.modes("asyncio", reason="asyncio task cancellation specifics")

LONG = 100.0


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


# -- trio semantics (asyncio and trio modes) -----------------------------------------------


@TRIO_SEMANTICS
@pytest.mark.virtual_clock
async def test_child_cancelling_the_group_and_returning_is_not_caught(backend: Any) -> None:
    async def canceller(tg: Any) -> None:
        tg.cancel_scope.cancel()

    async with backend.create_task_group() as tg:
        tg.start_soon(canceller, tg)
    assert tg.cancel_scope.cancel_called
    assert not tg.cancel_scope.cancelled_caught  # no cancellation ever reached it


@TRIO_SEMANTICS
@pytest.mark.virtual_clock
async def test_host_waiting_for_children_is_not_interrupted(backend: Any) -> None:
    log: list[str] = []
    ready = backend.create_event()

    async def shielded_child() -> None:
        with backend.create_cancel_scope(shield=True):
            ready.set()
            await backend.sleep(2)
        log.append("child done")

    async def cancel_later(scope: Any) -> None:
        await ready.wait()
        await backend.sleep(1)
        scope.cancel()

    async with backend.create_task_group() as helpers:
        with backend.create_cancel_scope() as outer:
            helpers.start_soon(cancel_later, outer)
            async with backend.create_task_group() as tg:
                tg.start_soon(shielded_child)
            log.append("after the group")  # runs: the wait was not interrupted
            assert outer.cancel_called and not outer.cancelled_caught
            await backend.sleep(0)  # the next checkpoint raises
            log.append("not reached")
    assert log == ["child done", "after the group"]
    assert outer.cancelled_caught
    assert not tg.cancel_scope.cancel_called and not tg.cancel_scope.cancelled_caught


@TRIO_SEMANTICS
@pytest.mark.virtual_clock
async def test_body_error_with_a_cancelled_child(backend: Any) -> None:
    async def sleeper() -> None:
        await backend.sleep(LONG)

    with pytest.raises(ExceptionGroup) as info:  # not a BaseExceptionGroup: no cancel left
        async with backend.create_task_group() as tg:
            tg.start_soon(sleeper)
            raise KeyError("body")
    assert [type(e) for e in info.value.exceptions] == [KeyError]
    assert tg.cancel_scope.cancel_called and tg.cancel_scope.cancelled_caught


@TRIO_SEMANTICS
@pytest.mark.virtual_clock
async def test_child_error_with_cancelled_siblings(backend: Any) -> None:
    async def sleeper() -> None:
        await backend.sleep(LONG)

    async def failing() -> None:
        await backend.sleep(1)
        raise ValueError("child")

    with pytest.raises(ExceptionGroup) as info:
        async with backend.create_task_group() as tg:
            tg.start_soon(sleeper)
            tg.start_soon(failing)
            await backend.sleep(LONG)
    assert [type(e) for e in _leaves(info.value)] == [ValueError]
    assert tg.cancel_scope.cancelled_caught


@TRIO_SEMANTICS
@pytest.mark.virtual_clock
async def test_outer_cancel_and_body_error_send_the_cancel_on(backend: Any) -> None:
    caught: list[list[type[BaseException]]] = []
    reached: list[str] = []

    async def sleeper() -> None:
        await backend.sleep(LONG)

    with backend.create_cancel_scope() as outer:
        try:
            async with backend.create_task_group() as tg:
                tg.start_soon(sleeper)
                outer.cancel()
                raise KeyError("body")
        except* KeyError as group:
            caught.append([type(e) for e in _leaves(group)])
        reached.append("after except*")  # skipped: the cancellation part went on
    assert caught == [[KeyError]]
    assert reached == []
    assert outer.cancelled_caught
    assert tg.cancel_scope.cancel_called and not tg.cancel_scope.cancelled_caught


@TRIO_SEMANTICS
@pytest.mark.virtual_clock
async def test_outer_cancel_with_a_child_error_is_in_the_group(backend: Any) -> None:
    cancelled = backend.get_cancelled_exc_class()
    seen: list[set[type[BaseException]]] = []

    async def failing() -> None:
        raise ValueError("child")

    with backend.create_cancel_scope() as outer:
        try:
            async with backend.create_task_group() as tg:
                tg.start_soon(failing)
                outer.cancel()
                await backend.sleep(LONG)
        except BaseExceptionGroup as group:
            seen.append({type(e) for e in _leaves(group)})
        await backend.sleep(LONG)  # the outer cancel is level-triggered: raised here
    assert seen == [{ValueError, cancelled}]
    assert outer.cancelled_caught


@TRIO_SEMANTICS
@pytest.mark.virtual_clock
async def test_group_deadline_cancels_the_children_and_is_caught(backend: Any) -> None:
    cancelled_children: list[int] = []

    async def sleeper(index: int) -> None:
        try:
            await backend.sleep(LONG)
        except backend.get_cancelled_exc_class():
            cancelled_children.append(index)
            raise

    async with backend.create_task_group() as tg:
        tg.cancel_scope.deadline = backend.current_time() + 1
        tg.start_soon(sleeper, 1)
        tg.start_soon(sleeper, 2)
    assert sorted(cancelled_children) == [1, 2]
    assert tg.cancel_scope.cancelled_caught


@TRIO_SEMANTICS
@pytest.mark.virtual_clock
async def test_outer_cancel_reaches_a_group_nested_in_a_child(backend: Any) -> None:
    running = backend.create_event()

    async def grandchild() -> None:
        running.set()
        await backend.sleep(LONG)

    async def child() -> None:
        async with backend.create_task_group() as inner:
            inner.start_soon(grandchild)

    with backend.create_cancel_scope() as outer:
        async with backend.create_task_group() as tg:
            tg.start_soon(child)
            await running.wait()
            outer.cancel()
    assert outer.cancelled_caught
    assert tg.cancel_scope.cancel_called and not tg.cancel_scope.cancelled_caught


# -- asyncio specifics ---------------------------------------------------------------------


@ASYNCIO_ONLY
@pytest.mark.virtual_clock
async def test_only_cancellations_leave_as_a_bare_cancelled_error(backend: Any) -> None:
    seen: list[BaseException] = []

    async def sleeper() -> None:
        await backend.sleep(LONG)

    with backend.create_cancel_scope() as outer:
        try:
            async with AsyncioTaskGroup() as tg:
                tg.start_soon(sleeper)
                tg.start_soon(sleeper)
                outer.deadline = backend.current_time() + 1
        except BaseException as exc:
            seen.append(exc)
            raise
    assert len(seen) == 1 and type(seen[0]) is asyncio.CancelledError
    assert outer.cancelled_caught


@ASYNCIO_ONLY
@pytest.mark.virtual_clock
async def test_external_cancel_of_the_waiting_host_is_reraised(backend: Any) -> None:
    children_cancelled: list[int] = []
    running = asyncio.Event()

    async def sleeper(index: int) -> None:
        try:
            running.set()
            await asyncio.sleep(LONG)
        except asyncio.CancelledError:
            children_cancelled.append(index)
            raise

    tg = AsyncioTaskGroup()

    async def host() -> None:
        async with tg:
            tg.start_soon(sleeper, 1)
            tg.start_soon(sleeper, 2)

    task = asyncio.get_running_loop().create_task(host())
    await running.wait()
    await asyncio.sleep(1)  # the host is waiting in __aexit__ now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert sorted(children_cancelled) == [1, 2]
    assert tg.cancel_scope.cancel_called and not tg.cancel_scope.cancelled_caught


@ASYNCIO_ONLY
@pytest.mark.virtual_clock
async def test_asyncio_timeout_around_a_waiting_group(backend: Any) -> None:
    async def sleeper() -> None:
        await asyncio.sleep(LONG)

    start = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1):
            async with AsyncioTaskGroup() as tg:
                tg.start_soon(sleeper)
    assert asyncio.get_running_loop().time() - start == pytest.approx(1)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    assert not tg.cancel_scope.cancelled_caught


@ASYNCIO_ONLY
@pytest.mark.virtual_clock
async def test_plain_cancel_of_a_child_in_a_cancelled_group_is_caught(backend: Any) -> None:
    """A child ending cancelled while the group is cancelled: caught by the group scope."""

    async def sleeper() -> None:
        await asyncio.sleep(LONG)

    async with AsyncioTaskGroup() as tg:
        tg.start_soon(sleeper)
        await asyncio.sleep(1)
        tg.cancel_scope.cancel()
    assert tg.cancel_scope.cancelled_caught


@ASYNCIO_ONLY
async def test_no_wake_up_per_iteration_after_an_external_cancel(backend: Any) -> None:
    """The host waits for slow shielded clean-ups with one waiter: no busy loop."""
    loop = asyncio.get_running_loop()
    futures = 0
    original = loop.create_future

    def counting() -> asyncio.Future[Any]:
        nonlocal futures
        futures += 1
        return original()

    async def slow_cleanup() -> None:
        try:
            await asyncio.sleep(LONG)
        finally:
            with backend.create_cancel_scope(shield=True):
                await asyncio.sleep(0.05)  # real time: a spinning host would loop meanwhile

    tg = AsyncioTaskGroup()

    async def host() -> None:
        async with tg:
            tg.start_soon(slow_cleanup)
            tg.start_soon(slow_cleanup)

    task = loop.create_task(host())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    loop.create_future = counting  # type: ignore[method-assign]
    try:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        del loop.create_future
    # one sleep per child clean-up, and one more waiter for the host at most
    assert futures <= 3
