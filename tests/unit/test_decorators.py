"""Decorators and the ``with_timeout`` helper (API.md §9.4, contract §13.9, fixes §14.20/21)."""

from __future__ import annotations

import functools
import gc
import inspect
import threading
import warnings
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from hother.cancelable import (
    Cancellable,
    CancellationReason,
    OperationRegistry,
    OperationStatus,
    cancellable,
    current_operation,
    with_timeout,
)
from hother.cancelable.utils import decorators as decorators_module
from hother.cancelable.utils.decorators import cancellable_method, with_current_operation


@pytest.fixture(autouse=True)
def registry() -> Iterator[OperationRegistry]:
    """A fresh registry for each test (the singleton is reset before and after)."""
    OperationRegistry._instance = None
    try:
        yield OperationRegistry.get_instance()
    finally:
        OperationRegistry._instance = None


# ============================================================================ @cancellable
async def test_returns_the_value_and_runs_in_a_completed_operation() -> None:
    seen: list[Cancellable | None] = []

    @cancellable()
    async def add(a: int, b: int) -> int:
        seen.append(current_operation())
        return a + b

    assert await add(2, 3) == 5
    op = seen[0]
    assert isinstance(op, Cancellable)
    assert op.context.name == "add"
    assert op.status is OperationStatus.COMPLETED
    assert current_operation() is None


async def test_each_call_is_a_new_operation() -> None:
    ops: list[Cancellable] = []

    @cancellable()
    async def job(cancellable: Cancellable | None = None) -> None:
        assert cancellable is not None
        ops.append(cancellable)

    await job()
    await job()
    assert ops[0] is not ops[1]
    assert ops[0].operation_id != ops[1].operation_id
    assert len(ops[0].operation_id) == 36


async def test_timeout_cancels_the_call(backend: Any) -> None:
    box: list[Cancellable] = []

    @cancellable(timeout=0.05)
    async def slow(cancellable: Cancellable) -> str:
        box.append(cancellable)
        await backend.sleep(30)
        return "never"

    with pytest.raises(backend.get_cancelled_exc_class()):
        await slow()  # type: ignore[call-arg]
    op = box[0]
    assert op.is_cancelled
    assert op.context.cancel_reason is CancellationReason.TIMEOUT
    assert op.context.name == "slow"


async def test_timedelta_timeout_and_a_generous_one_completes(backend: Any) -> None:
    @cancellable(timeout=timedelta(seconds=30))
    async def quick(cancellable: Cancellable) -> OperationStatus:
        await backend.sleep(0)
        return cancellable.status

    assert await quick() is OperationStatus.RUNNING  # type: ignore[call-arg]


async def test_injects_the_instance_under_the_default_name() -> None:
    @cancellable(timeout=1.0)
    async def op(cancellable: Cancellable | None = None) -> Cancellable | None:
        return cancellable

    got = await op()
    assert isinstance(got, Cancellable)
    assert got.is_completed


async def test_inject_param_none_disables_injection() -> None:
    @cancellable(inject_param=None)
    async def op(cancellable: Any = "default") -> Any:
        return cancellable

    assert await op() == "default"


async def test_inject_param_custom_name() -> None:
    @cancellable(inject_param="cancel_ctx")
    async def op(cancel_ctx: Any = None, cancellable: Any = "untouched") -> tuple[Any, Any]:
        return cancel_ctx, cancellable

    ctx, other = await op()
    assert isinstance(ctx, Cancellable)
    assert ctx is not None and ctx.is_completed
    assert other == "untouched"


async def test_function_without_the_parameter_gets_nothing_injected() -> None:
    @cancellable()
    async def op(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    assert await op() == {}  # a **kwargs catch-all is not "a parameter named cancellable"


# ------------------------------------------------------------------- §14.21: caller wins
async def test_injection_never_overrides_a_keyword_value() -> None:
    mine = Cancellable(name="mine")

    @cancellable()
    async def op(cancellable: Any = None) -> Any:
        return cancellable

    assert await op(cancellable=mine) is mine
    assert await op(cancellable=None) is None  # an explicit None is the caller's choice
    assert mine.status is OperationStatus.PENDING  # not entered by the decorator


async def test_injection_never_overrides_a_positional_value() -> None:
    @cancellable()
    async def op(x: int, cancellable: Any = None, y: int = 0) -> tuple[int, Any, int]:
        return x, cancellable, y

    x, c, y = await op(1, "positional", 2)
    assert (x, c, y) == (1, "positional", 2)
    x, c, y = await op(1, y=5)
    assert x == 1 and y == 5 and isinstance(c, Cancellable)


async def test_injection_into_keyword_only_and_positional_only_parameters() -> None:
    @cancellable()
    async def kw_only(*items: int, cancellable: Any = None) -> tuple[tuple[int, ...], Any]:
        return items, cancellable

    items, c = await kw_only(1, 2, 3)
    assert items == (1, 2, 3) and isinstance(c, Cancellable)

    @cancellable()
    async def pos_only(a: int, cancellable: Any = None, /) -> tuple[int, Any]:
        return a, cancellable

    a, c = await pos_only(7)
    assert a == 7 and isinstance(c, Cancellable)
    assert await pos_only(7, "given") == (7, "given")


# ------------------------------------------------------------------- registry and ids
async def test_fixed_id_registered_globally(backend: Any, registry: OperationRegistry) -> None:
    started = backend.create_event()
    release = backend.create_event()
    result: list[Any] = []

    @cancellable(operation_id="custom-op-123", name="custom_operation", register_globally=True)
    async def job(cancellable: Cancellable) -> str:
        result.append(cancellable.operation_id)
        started.set()
        await release.wait()
        return "done"

    async def run() -> None:
        result.append(await job())  # type: ignore[call-arg]

    async with backend.create_task_group() as tg:
        tg.start_soon(run)
        await started.wait()
        running = await registry.list_operations()
        assert [c.id for c in running] == ["custom-op-123"]
        assert running[0].name == "custom_operation"
        release.set()
    assert result == ["custom-op-123", "done"]
    assert await registry.get_operation("custom-op-123") is None
    history = await registry.get_history()
    assert [(h.id, h.status) for h in history] == [("custom-op-123", OperationStatus.COMPLETED)]


async def test_fixed_id_is_suffixed_while_taken_then_reused(
    backend: Any, registry: OperationRegistry
) -> None:
    """§14.20: concurrent calls never share an id; sequential calls keep the given one."""
    first_in = backend.create_event()
    second_in = backend.create_event()
    release = backend.create_event()
    ids: dict[str, str] = {}

    @cancellable(operation_id="job", register_globally=True)
    async def job(tag: str, cancellable: Cancellable) -> None:
        ids[tag] = cancellable.operation_id
        (first_in if tag == "a" else second_in).set()
        await release.wait()

    async with backend.create_task_group() as tg:
        tg.start_soon(job, "a")
        await first_in.wait()
        tg.start_soon(job, "b")
        await second_in.wait()
        assert sorted(c.id for c in await registry.list_operations()) == ["job", "job-2"]
        release.set()
    assert ids == {"a": "job", "b": "job-2"}

    await job("c")  # type: ignore[call-arg]  # nothing running any more: the plain id again
    assert ids["c"] == "job"
    history = [h.id for h in await registry.get_history()]
    assert sorted(history) == ["job", "job", "job-2"]


async def test_fixed_id_avoids_an_operation_registered_by_someone_else(
    registry: OperationRegistry,
) -> None:
    async with Cancellable(operation_id="shared", register_globally=True) as outer:

        @cancellable(operation_id="shared")
        async def job(cancellable: Cancellable) -> str:
            return cancellable.operation_id

        assert await job() == "shared-2"  # type: ignore[call-arg]
        assert await registry.get_operation("shared") is outer
    assert await job() == "shared"  # type: ignore[call-arg]


async def test_fixed_id_is_released_when_the_call_fails() -> None:
    @cancellable(operation_id="failing")
    async def job(cancellable: Cancellable) -> None:
        raise ValueError(cancellable.operation_id)

    for _ in range(3):
        with pytest.raises(ValueError, match=r"^failing$"):
            await job()  # type: ignore[call-arg]


def test_claimed_ids_are_unique_across_threads() -> None:
    claimed: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        got = decorators_module._claim_id("threaded")
        with lock:
            claimed.append(got)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    try:
        assert sorted(claimed) == sorted(["threaded", *(f"threaded-{i}" for i in range(2, 9))])
    finally:
        for got in claimed:
            decorators_module._release_id(got)
    assert decorators_module._claim_id("threaded") == "threaded"
    decorators_module._release_id("threaded")


# ------------------------------------------------------------------- wrapper metadata
def test_wraps_and_cancellable_params() -> None:
    @cancellable(timeout=5.0)
    async def documented_function(x: int) -> int:
        """Some documentation."""
        return x

    assert documented_function.__name__ == "documented_function"
    assert documented_function.__doc__ == "Some documentation."
    assert documented_function.__wrapped__ is not None  # type: ignore[attr-defined]
    assert inspect.iscoroutinefunction(documented_function)
    assert documented_function._cancellable_params == {  # type: ignore[attr-defined]
        "timeout": 5.0,
        "operation_id": None,
        "name": "documented_function",
        "register_globally": False,
    }

    @cancellable(operation_id="x", name="named", register_globally=True)
    async def other() -> None:
        pass

    params = other._cancellable_params  # type: ignore[attr-defined]
    assert params["name"] == "named"
    assert params["operation_id"] == "x"
    assert params["register_globally"] is True
    assert params["timeout"] is None


async def test_callable_object_and_partial_are_accepted() -> None:
    class Job:
        async def __call__(self, x: int) -> int:
            return x * 2

    async def base(x: int, y: int) -> int:
        return x + y

    assert await cancellable()(Job())(4) == 8
    assert await cancellable()(functools.partial(base, 1))(2) == 3


# ------------------------------------------------------------------- bad input
def test_decorating_a_sync_function_is_a_type_error() -> None:
    def not_async() -> None:
        pass

    with pytest.raises(TypeError, match="not_async"):
        cancellable()(not_async)  # type: ignore[type-var]


def test_decorating_an_async_generator_is_a_type_error() -> None:
    async def agen() -> Any:
        yield 1

    with pytest.raises(TypeError, match=r"async generator function.*agen"):
        cancellable()(agen)


def test_decorating_a_non_callable_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="async function"):
        cancellable()(42)  # type: ignore[type-var]


def test_bare_decorator_use_is_a_clear_type_error() -> None:
    async def f() -> None:
        pass

    with pytest.raises(TypeError, match=r"@cancellable\(\)"):
        cancellable(f)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1, float("nan"), timedelta(0)])
def test_non_positive_timeout_is_a_value_error(bad: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        cancellable(timeout=bad)
    with pytest.raises(ValueError, match="timeout"):
        cancellable_method(timeout=bad)


@pytest.mark.parametrize("bad", ["1", True, [1]])
def test_non_number_timeout_is_a_type_error(bad: Any) -> None:
    with pytest.raises(TypeError, match="timeout"):
        cancellable(timeout=bad)
    with pytest.raises(TypeError, match="timeout"):
        cancellable_method(timeout=bad)


@pytest.mark.parametrize(
    ("kwargs", "exc", "word"),
    [
        ({"operation_id": 5}, TypeError, "operation_id"),
        ({"operation_id": ""}, ValueError, "operation_id"),
        ({"name": 5}, TypeError, "name"),
        ({"register_globally": "yes"}, TypeError, "register_globally"),
        ({"inject_param": 3}, TypeError, "inject_param"),
        ({"inject_param": "not a name"}, ValueError, "inject_param"),
    ],
)
def test_bad_decorator_arguments(kwargs: dict[str, Any], exc: type[Exception], word: str) -> None:
    with pytest.raises(exc, match=word):
        cancellable(**kwargs)


def test_bad_method_decorator_arguments() -> None:
    with pytest.raises(TypeError, match="name"):
        cancellable_method(name=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="register_globally"):
        cancellable_method(register_globally=None)  # type: ignore[arg-type]

    def sync_method(self: Any) -> None:
        pass

    with pytest.raises(TypeError, match="sync_method"):
        cancellable_method()(sync_method)  # type: ignore[type-var]


# ============================================================================ with_timeout
async def test_with_timeout_returns_the_result(backend: Any) -> None:
    async def work() -> Cancellable | None:
        await backend.sleep(0)
        return current_operation()

    op = await with_timeout(1.0, work())
    assert isinstance(op, Cancellable)
    assert op.context.name == "timeout_1.0s"
    assert op.is_completed


async def test_with_timeout_expiry_raises_the_backend_cancel_exception(backend: Any) -> None:
    box: list[Cancellable | None] = []

    async def slow() -> None:
        box.append(current_operation())
        await backend.sleep(30)

    with pytest.raises(backend.get_cancelled_exc_class()):
        await with_timeout(0.05, slow())
    op = box[0]
    assert op is not None and op.is_cancelled
    assert op.context.cancel_reason is CancellationReason.TIMEOUT


async def test_with_timeout_timedelta_id_and_name(backend: Any) -> None:
    async def work() -> tuple[str, str | None]:
        op = current_operation()
        assert op is not None
        return op.operation_id, op.context.name

    got = await with_timeout(timedelta(seconds=2), work(), operation_id="wt-1", name="nm")
    assert got == ("wt-1", "nm")


async def test_with_timeout_accepts_any_awaitable(backend: Any) -> None:
    class Awaitable:
        def __await__(self) -> Any:
            return backend.sleep(0).__await__()

    assert await with_timeout(1, Awaitable()) is None


async def test_with_timeout_rejects_non_awaitables() -> None:
    async def coro_fn() -> None:
        pass

    with pytest.raises(TypeError, match=r"awaitable.*forget to call"):
        await with_timeout(1.0, coro_fn)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="awaitable"):
        await with_timeout(1.0, 42)  # type: ignore[arg-type]


@pytest.mark.parametrize(("bad", "exc"), [(0, ValueError), (-1, ValueError), ("1", TypeError)])
async def test_with_timeout_bad_timeout_closes_the_refused_coroutine(
    bad: Any, exc: type[Exception]
) -> None:
    ran: list[bool] = []

    async def work() -> None:
        ran.append(True)

    coro = work()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "never awaited" would be an error
        with pytest.raises(exc, match="timeout"):
            await with_timeout(bad, coro)
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
        del coro
        gc.collect()
    assert ran == []


# ============================================================================ current operation
async def test_with_current_operation_injects_none_outside_and_the_instance_inside() -> None:
    @with_current_operation()
    async def f(x: int, operation: Any = "unset") -> tuple[int, Any]:
        return x, operation

    assert await f(1) == (1, None)
    async with Cancellable(name="outer") as op:
        assert await f(2) == (2, op)
        assert await f(3, operation="explicit") == (3, "explicit")
        assert await f(4, "positional") == (4, "positional")


async def test_with_current_operation_leaves_other_functions_alone() -> None:
    @with_current_operation()
    async def g(value: int, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        """Doc."""
        return value, kwargs

    async with Cancellable():
        assert await g(5) == (5, {})
    assert g.__name__ == "g" and g.__doc__ == "Doc."


def test_with_current_operation_rejects_sync_functions() -> None:
    def plain(operation: Any = None) -> None:
        pass

    with pytest.raises(TypeError, match="plain"):
        with_current_operation()(plain)  # type: ignore[type-var]


# ============================================================================ methods
class Worker:
    """A class with decorated methods (state on ``self``)."""

    def __init__(self) -> None:
        self.calls = 0
        self.ops: list[Cancellable] = []

    @cancellable_method()
    async def run(self, amount: int, cancellable: Cancellable | None = None) -> int:
        assert cancellable is not None
        self.ops.append(cancellable)
        self.calls += amount
        return self.calls

    @cancellable_method(name="custom")
    async def named(self, cancellable: Cancellable | None = None) -> str | None:
        assert cancellable is not None
        return cancellable.context.name


class SubWorker(Worker):
    """Overrides ``run`` and calls ``super()``."""

    @cancellable_method()
    async def run(self, amount: int, cancellable: Cancellable | None = None) -> int:
        assert cancellable is not None
        self.ops.append(cancellable)
        return await super().run(amount * 10)


async def test_method_updates_state_and_gets_a_named_operation() -> None:
    w = Worker()
    assert await w.run(2) == 2
    assert await w.run(3) == 5
    assert [op.context.name for op in w.ops] == ["Worker.run", "Worker.run"]
    assert all(op.is_completed for op in w.ops)
    assert w.ops[0] is not w.ops[1]
    assert await w.named() == "custom"
    assert Worker.run.__name__ == "run"


async def test_method_super_calls_are_separate_operations() -> None:
    s = SubWorker()
    assert await s.run(1) == 10
    assert len(s.ops) == 2
    outer, inner = s.ops
    assert outer is not inner
    assert outer.context.name == inner.context.name == "SubWorker.run"  # runtime class
    assert outer.is_completed and inner.is_completed


async def test_method_caller_value_wins() -> None:
    w = Worker()
    mine = Cancellable()
    await w.run(1, mine)
    await w.run(1, cancellable=mine)
    assert w.ops == [mine, mine]
    assert mine.status is OperationStatus.PENDING


async def test_method_timeout(backend: Any) -> None:
    class Slow:
        @cancellable_method(timeout=0.05, register_globally=True)
        async def wait(self, cancellable: Cancellable | None = None) -> None:
            assert cancellable is not None
            self.op = cancellable
            await backend.sleep(30)

    s = Slow()
    with pytest.raises(backend.get_cancelled_exc_class()):
        await s.wait()
    assert s.op.is_cancelled
    assert s.op.context.cancel_reason is CancellationReason.TIMEOUT
    history = await OperationRegistry.get_instance().get_history()
    assert [h.name for h in history] == ["Slow.wait"]
