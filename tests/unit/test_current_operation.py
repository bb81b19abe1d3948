"""``current_operation()`` (API.md §6.1) and ``Cancellable.run_in_thread`` (§14.23).

A context variable: set on enter, restored on exit (whatever the exit path), inherited by
tasks started inside the block, not visible in plain threads except through
``run_in_thread``, which works on every backend (trio included) and leaves nothing behind in
the pooled worker thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import pytest

from hother.cancelable import Cancellable, CancellationToken, current_operation
from hother.cancelable.core import cancellable as cancellable_module

LONG = 10.0


def test_none_outside_any_operation() -> None:
    assert current_operation() is None


def test_context_variable_name() -> None:
    assert cancellable_module._current_operation.name == "current_operation"


async def test_none_in_async_code_outside(backend: Any) -> None:
    assert current_operation() is None


async def test_set_inside_and_restored_after(backend: Any) -> None:
    op = Cancellable()
    assert current_operation() is None
    async with op:
        assert current_operation() is op
        await backend.sleep(0)
        assert current_operation() is op
    assert current_operation() is None


async def test_nested_restores_outer(backend: Any) -> None:
    async with Cancellable(name="outer") as outer:
        async with Cancellable(name="inner") as inner:
            assert current_operation() is inner
            async with Cancellable(name="innermost") as innermost:
                assert current_operation() is innermost
            assert current_operation() is inner
        assert current_operation() is outer
    assert current_operation() is None


async def test_restored_after_error(backend: Any) -> None:
    async with Cancellable() as outer:
        with pytest.raises(ValueError):
            async with Cancellable():
                raise ValueError("x")
        assert current_operation() is outer
    assert current_operation() is None


async def test_restored_after_cancellation(backend: Any) -> None:
    cancel_exc = backend.get_cancelled_exc_class()
    async with Cancellable() as outer:
        with pytest.raises(cancel_exc):
            async with Cancellable.with_timeout(0.01):
                await backend.sleep(LONG)
        assert current_operation() is outer
        with pytest.raises(cancel_exc):
            async with Cancellable() as op:
                await op.cancel()
                await backend.sleep(LONG)
        assert current_operation() is outer
    assert current_operation() is None


async def test_visible_in_callbacks(backend: Any) -> None:
    seen: list[Any] = []
    op = Cancellable()
    op.on_start(lambda ctx: seen.append(("start", current_operation())))
    op.on_complete(lambda ctx: seen.append(("complete", current_operation())))
    async with op:
        pass
    assert seen == [("start", op), ("complete", op)]


async def test_inherited_by_tasks_started_inside(backend: Any) -> None:
    seen: list[Any] = []

    async def child() -> None:
        await backend.sleep(0)
        seen.append(current_operation())

    async with Cancellable() as op:
        async with backend.create_task_group() as tg:
            tg.start_soon(child)
            tg.start_soon(child)
    assert seen == [op, op]


async def test_tasks_started_before_do_not_see_it(backend: Any) -> None:
    seen: list[Any] = []
    entered = backend.create_event()
    done = backend.create_event()

    async def watcher() -> None:
        await entered.wait()
        seen.append(current_operation())
        done.set()

    async with backend.create_task_group() as tg:
        tg.start_soon(watcher)
        async with Cancellable():
            entered.set()
            await done.wait()
    assert seen == [None]


async def test_sibling_tasks_see_their_own(backend: Any) -> None:
    results: dict[str, bool] = {}
    barrier = backend.create_event()
    count = 0

    async def worker(name: str) -> None:
        nonlocal count
        async with Cancellable(name=name) as op:
            count += 1
            if count == 3:
                barrier.set()
            await barrier.wait()  # all three are inside their block at the same time
            results[name] = current_operation() is op
        assert current_operation() is None

    async with backend.create_task_group() as tg:
        for name in ("a", "b", "c"):
            tg.start_soon(worker, name)
    assert results == {"a": True, "b": True, "c": True}


async def test_not_an_implicit_parent(backend: Any) -> None:
    async with Cancellable() as outer:
        inner = Cancellable()
        assert inner.parent is None
        assert inner.context.parent_id is None
        assert inner not in outer._children


async def test_not_visible_in_a_plain_thread(backend: Any) -> None:
    seen: list[Any] = []
    async with Cancellable():
        thread = threading.Thread(target=lambda: seen.append(current_operation()))
        thread.start()
        thread.join(LONG)
    assert seen == [None]


# ====================================================================== run_in_thread


async def test_run_in_thread_sees_the_operation(backend: Any) -> None:
    loop_thread = threading.get_ident()

    def work(a: int, b: int, *, scale: int = 1) -> tuple[Any, int, int]:
        return current_operation(), threading.get_ident(), (a + b) * scale

    async with Cancellable() as op:
        seen, thread_id, value = await op.run_in_thread(work, 2, 3, scale=10)
        assert current_operation() is op
    assert seen is op
    assert thread_id != loop_thread
    assert value == 50


async def test_run_in_thread_on_a_non_current_operation(backend: Any) -> None:
    other = Cancellable(name="other")
    async with Cancellable(name="current") as current:
        seen = await other.run_in_thread(current_operation)
        assert seen is other
        assert current_operation() is current


async def test_run_in_thread_carries_other_context_variables(backend: Any) -> None:
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("test_var", default="unset")
    var.set("caller value")
    async with Cancellable() as op:
        assert await op.run_in_thread(var.get) == "caller value"


async def test_run_in_thread_propagates_exceptions(backend: Any) -> None:
    def fail() -> None:
        raise LookupError("in thread")

    async with Cancellable() as op:
        with pytest.raises(LookupError, match="in thread"):
            await op.run_in_thread(fail)
        assert current_operation() is op


async def test_run_in_thread_does_not_block_the_loop(backend: Any) -> None:
    release = threading.Event()
    ticks = 0

    def blocking() -> str:
        assert release.wait(LONG)
        return "released"

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(3):
            await backend.sleep(0.001)
            ticks += 1
        release.set()

    async with Cancellable() as op:
        async with backend.create_task_group() as tg:
            tg.start_soon(ticker)
            assert await op.run_in_thread(blocking) == "released"
    assert ticks == 3


async def test_run_in_thread_token_cancel_from_the_thread(backend: Any) -> None:
    """A thread started through run_in_thread can cancel its operation with cancel_sync."""
    cancel_exc = backend.get_cancelled_exc_class()

    def stop_from_thread() -> bool:
        op = current_operation()
        assert op is not None
        return op.cancel_sync()

    with pytest.raises(cancel_exc):
        async with Cancellable() as op:
            assert await op.run_in_thread(stop_from_thread) is True
            await backend.sleep(LONG)
    assert op.is_cancelled


@pytest.mark.modes(
    "asyncio",
    "uvloop",
    reason="a raw executor job that runs without a context copy (loop.run_in_executor) "
    "only exists on asyncio; anyio/trio worker threads always run in a copied context",
)
async def test_run_in_thread_does_not_leak_into_the_pool_thread(backend: Any) -> None:
    loop = asyncio.get_running_loop()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(pool)
    try:

        def probe() -> tuple[Any, int]:
            return current_operation(), threading.get_ident()

        async with Cancellable() as op:
            seen, worker = await op.run_in_thread(probe)
            assert seen is op
        # the same pooled worker, run without copying a context: nothing left behind
        after, worker_again = await loop.run_in_executor(None, probe)
        assert worker_again == worker
        assert after is None
    finally:
        pool.shutdown(wait=True)


async def test_run_in_thread_leaves_worker_threads_clean(backend: Any) -> None:
    """Consecutive run_in_thread calls of different operations never see each other."""
    ops = [Cancellable(name=f"op{i}") for i in range(4)]
    seen = [await op.run_in_thread(current_operation) for op in ops]
    assert seen == ops
    token = CancellationToken()
    assert await Cancellable.with_token(token).run_in_thread(lambda: 42) == 42
    assert current_operation() is None


async def test_async_generator_closed_early_restores(backend: Any) -> None:
    """An operation held open across ``yield`` and closed early (same task) is cleaned up."""
    ops: list[Cancellable] = []

    async def gen() -> Any:
        async with Cancellable() as op:
            ops.append(op)
            yield 1
            await backend.sleep(0)
            yield 2  # pragma: no cover - closed before

    async with Cancellable() as outer:
        agen = gen()
        assert await agen.__anext__() == 1
        # an async generator runs in its consumer's context
        assert current_operation() is ops[0]
        await agen.aclose()
        assert current_operation() is outer
        assert not ops[0].is_running
        await backend.sleep(0)
    assert current_operation() is None
