"""executor.c (running hooks where they belong), module.c (error reporting) and registry.c
(the registry table): argument checks and failure handling."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from hother.cancelable import _engine
from hother.cancelable.core import token as token_module

from .conftest import ReportedErrors
from .fakes import FakeFutureTask, FakeLoop, running


class Boom(Exception):
    """The error the test objects raise."""


class Ready:
    """An awaitable that is not a coroutine (completes at once)."""

    def __await__(self) -> Iterator[None]:
        return iter(())


# -- _run_hook -----------------------------------------------------------------------------------


def test_run_hook_argument_checks() -> None:
    with pytest.raises(TypeError, match="takes 2 arguments"):
        _engine._run_hook(print)
    with pytest.raises(TypeError, match="fn must be callable"):
        _engine._run_hook(3, None)


def test_run_hook_reports_a_raising_callback(engine_errors: ReportedErrors) -> None:
    def fails(arg: Any) -> None:
        raise Boom(arg)

    assert _engine._run_hook(fails, "x") is None
    assert engine_errors.wheres() == ["hother.cancelable: token callback raised"]
    assert engine_errors[0][1].args == ("x",)


def test_run_hook_spawns_any_awaitable_on_the_loop() -> None:
    async def main() -> None:
        future = asyncio.get_running_loop().create_future()
        _engine._run_hook(lambda arg: future, None)
        assert len(_engine._pending_hook_tasks) == 1
        future.set_result(1)
        for _ in range(3):
            await asyncio.sleep(0)
        assert len(_engine._pending_hook_tasks) == 0

    asyncio.run(main())


def test_run_hook_spawn_failures_are_reported(engine_errors: ReportedErrors) -> None:
    async def body() -> None:
        pass

    loop = FakeLoop()
    with running(loop):
        loop.fail["create_task"] = Boom("create_task")
        coro = body()
        _engine._run_hook(lambda arg: coro, None)
        assert coro.cr_frame is None  # closed: it will never run
        loop.fail.clear()
        refused = FakeFutureTask(None)
        refused.fail_add_done_callback = Boom("add_done_callback")
        loop.create_task = lambda c: (c.close(), refused)[1]  # type: ignore[method-assign]
        _engine._run_hook(lambda arg: Ready(), None)
    assert engine_errors.wheres() == ["hother.cancelable: cannot run async token callback"] * 2
    assert [str(exc) for _, exc in engine_errors] == ["create_task", "add_done_callback"]
    _engine._pending_hook_tasks.discard(refused)


def test_awaitable_without_loop_or_trio_is_reported_and_closed(
    engine_errors: ReportedErrors,
) -> None:
    async def body() -> None:
        pass

    coro = body()
    _engine._run_hook(lambda arg: coro, None)
    assert coro.cr_frame is None
    assert engine_errors.wheres() == ["hother.cancelable: cannot run async token callback"]
    assert "no running event loop or trio run" in str(engine_errors[0][1])


# -- the hook runner (the coroutine a spawned async callback runs in) -----------------------------


class Stop(BaseException):
    """A BaseException that is not an Exception: the runner lets it through."""


class Steps:
    """An awaitable whose iterator yields ``steps`` values, optionally without throw/close."""

    def __init__(self, steps: int, *, with_throw: bool = True, close_raises: Any = None) -> None:
        self.steps = steps
        self.with_throw = with_throw
        self.close_raises = close_raises
        self.closed = False
        self.thrown: list[Any] = []

    def __await__(self) -> Any:
        outer = self

        class It:
            def __init__(self) -> None:
                self.left = outer.steps

            def __next__(self) -> Any:
                return self.send(None)

            def send(self, value: Any) -> Any:
                if self.left == 0:
                    raise StopIteration("done")
                self.left -= 1
                return f"step{self.left}"

            def close(self) -> None:
                outer.closed = True
                if outer.close_raises is not None:
                    raise outer.close_raises

        if self.with_throw:

            def throw(*args: Any) -> Any:
                self.thrown.append(args)
                if isinstance(args[0], type) and issubclass(args[0], KeyError):
                    return "caught"  # the awaitable handles it and yields again
                if args[0] is StopIteration:
                    raise StopIteration
                raise args[0] if len(args) == 1 else args[1]

            It.throw = staticmethod(throw)  # type: ignore[attr-defined]
        return It()


def _drive(runner: Any) -> list[Any]:
    """send(None) until the runner is done; the values it yielded."""
    out = []
    while True:
        try:
            out.append(runner.send(None))
        except StopIteration as stop:
            assert stop.value is None  # the runner returns None whatever aw returned
            return out


def test_hook_runner_is_a_coroutine() -> None:
    import collections.abc

    runner = _engine._hook_runner(Ready())
    assert isinstance(runner, collections.abc.Coroutine) and asyncio.iscoroutine(runner)
    assert not isinstance(runner, collections.abc.Generator)
    assert runner.__await__() is runner and runner.__name__ == runner.__qualname__
    with pytest.raises(TypeError, match="aw must be awaitable"):
        _engine._hook_runner(3)
    with pytest.raises(TypeError, match="non-None value"):
        runner.send(1)
    assert _drive(runner) == []
    with pytest.raises(RuntimeError, match="cannot reuse"):
        runner.send(None)
    with pytest.raises(KeyError):
        runner.throw(KeyError("after the end"))  # a finished coroutine just raises it
    assert runner.close() is None


def test_hook_runner_reports_an_exception_and_lets_a_base_exception_through(
    engine_errors: ReportedErrors,
) -> None:
    async def fails() -> None:
        raise Boom("async")

    async def stops() -> None:
        raise Stop("base")

    assert _drive(_engine._hook_runner(fails())) == []
    assert engine_errors.wheres() == ["hother.cancelable: async token callback raised"]
    assert isinstance(engine_errors[0][1], Boom)
    with pytest.raises(Stop):
        _drive(_engine._hook_runner(stops()))
    assert len(engine_errors) == 1


def test_hook_runner_delegates_like_await(engine_errors: ReportedErrors) -> None:
    aw = Steps(2)
    runner = _engine._hook_runner(aw)
    assert runner.send(None) == "step1"
    assert runner.throw(KeyError) == "caught"  # delegated to the iterator's throw()
    assert aw.thrown == [(KeyError,)]
    assert _drive(runner) == ["step0"]
    # an exception the iterator does not handle reaches the runner's try: reported
    runner = _engine._hook_runner(Steps(2))
    runner.send(None)
    with pytest.raises(StopIteration):
        runner.throw(Boom, Boom("thrown"), None)
    assert [type(e) for _, e in engine_errors] == [Boom]
    # the iterator finishing inside throw(): the runner returns
    runner = _engine._hook_runner(Steps(2))
    runner.send(None)
    with pytest.raises(StopIteration):
        runner.throw(StopIteration)
    # an iterator without throw(): raised at the await, inside the try
    runner = _engine._hook_runner(Steps(2, with_throw=False))
    runner.send(None)
    with pytest.raises(StopIteration):
        runner.throw(ValueError("no throw method"))
    runner = _engine._hook_runner(Steps(2, with_throw=False))
    runner.send(None)
    with pytest.raises(Stop):
        runner.throw(Stop())
    assert [type(e) for _, e in engine_errors] == [Boom, ValueError]
    # GeneratorExit: the iterator is closed, then GeneratorExit propagates
    aw = Steps(2)
    runner = _engine._hook_runner(aw)
    runner.send(None)
    with pytest.raises(GeneratorExit):
        runner.throw(GeneratorExit)
    assert aw.closed and aw.thrown == []


def test_hook_runner_throw_argument_checks() -> None:
    tb = None
    try:
        raise Boom("tb")
    except Boom as exc:
        tb = exc.__traceback__
    for state in ("new", "awaiting"):
        runner = _engine._hook_runner(Steps(2, with_throw=False))
        if state == "awaiting":
            runner.send(None)
        with pytest.raises(TypeError, match="1 to 3 arguments"):
            runner.throw()
        with pytest.raises(TypeError, match="traceback object"):
            runner.throw(Boom, None, 3)
        with pytest.raises(TypeError, match="deriving from BaseException"):
            runner.throw(3)
        with pytest.raises(TypeError, match="separate value"):
            runner.throw(Boom("x"), Boom("y"))
        # nothing was thrown: the runner carries on
        assert _drive(runner) == (["step1", "step0"] if state == "new" else ["step0"])
    runner = _engine._hook_runner(Steps(1))
    with pytest.raises(Boom) as info:
        runner.throw(Boom, "text", tb)  # before the start: raised outside the try
    assert info.value.args == ("text",) and info.value.__traceback__ is not None
    with pytest.raises(Boom):
        _engine._hook_runner(Steps(1)).throw(Boom("instance"), None, tb)


def test_hook_runner_throw_or_close_before_the_start_closes_the_awaitable() -> None:
    async def body() -> None:
        pass

    coro = body()
    runner = _engine._hook_runner(coro)
    with pytest.raises(asyncio.CancelledError):
        runner.throw(asyncio.CancelledError())
    assert coro.cr_frame is None  # closed: no "never awaited" warning
    coro = body()
    _engine._hook_runner(coro).close()
    assert coro.cr_frame is None


def test_hook_runner_close(engine_errors: ReportedErrors) -> None:
    aw = Steps(3)
    runner = _engine._hook_runner(aw)
    runner.send(None)
    assert runner.close() is None and aw.closed
    with pytest.raises(RuntimeError, match="cannot reuse"):
        runner.send(None)
    # close() of the iterator raising an Exception: reaches the try, reported
    runner = _engine._hook_runner(Steps(3, close_raises=Boom("close")))
    runner.send(None)
    assert runner.close() is None
    # ... a BaseException: propagates
    runner = _engine._hook_runner(Steps(3, close_raises=Stop("close")))
    runner.send(None)
    with pytest.raises(Stop):
        runner.close()

    # an iterator without close(): nothing to close
    class Plain:
        def __await__(self) -> Any:
            return iter([1, 2])

    runner = _engine._hook_runner(Plain())
    assert runner.send(None) == 1
    assert runner.close() is None
    with pytest.raises(RuntimeError, match="cannot reuse"):
        runner.send(None)
    assert [str(e) for _, e in engine_errors] == ["close"]


def test_hook_runner_bad_awaitables_are_reported(engine_errors: ReportedErrors) -> None:
    async def body() -> None:
        pass

    class ReturnsCoroutine:
        def __await__(self) -> Any:
            return self.coro

    class ReturnsNonIterator:
        def __await__(self) -> Any:
            return 3

    class Raises:
        def __await__(self) -> Any:
            raise Boom("__await__")

    bad = ReturnsCoroutine()
    bad.coro = body()  # type: ignore[attr-defined]
    for aw in (bad, ReturnsNonIterator(), Raises()):
        assert _drive(_engine._hook_runner(aw)) == []
    bad.coro.close()  # type: ignore[attr-defined]
    assert [str(e) for _, e in engine_errors] == [
        "__await__() returned a coroutine",
        "__await__() returned non-iterator of type 'int'",
        "__await__",
    ]


def test_hook_runner_refuses_re_entry() -> None:
    runner: Any = None
    seen: list[str] = []

    class Reenters:
        def __await__(self) -> Any:
            for call in (lambda: runner.send(None), lambda: runner.throw(Boom), runner.close):
                try:
                    call()
                except ValueError as exc:
                    seen.append(str(exc))
            return iter(())

    runner = _engine._hook_runner(Reenters())
    assert _drive(runner) == []
    assert seen == ["coroutine already executing"] * 3


def test_hook_runner_runs_under_asyncio_and_trio(engine_errors: ReportedErrors) -> None:
    import trio

    ran: list[str] = []

    async def asyncio_callback() -> None:
        await asyncio.sleep(0)
        ran.append("asyncio")
        raise Boom("asyncio")

    async def trio_callback() -> None:
        await trio.sleep(0)
        ran.append("trio")
        raise Boom("trio")

    async def on_asyncio() -> None:
        _engine._run_hook(lambda arg: asyncio_callback(), None)
        (task,) = _engine._pending_hook_tasks
        assert "_hook_runner" in repr(task)
        await task
        assert task.result() is None

    async def on_trio() -> None:
        _engine._run_hook(lambda arg: trio_callback(), None)
        for _ in range(3):
            await trio.sleep(0)

    asyncio.run(on_asyncio())
    trio.run(on_trio)
    assert ran == ["asyncio", "trio"]
    assert [str(e) for _, e in engine_errors] == ["asyncio", "trio"]


def test_a_task_scheduled_despite_a_spawn_failure_does_not_run_the_callback(
    engine_errors: ReportedErrors,
) -> None:
    """create_task failing after it scheduled the task: the callback was reported as not run,
    so the runner is abandoned: the task finishes at once and the awaitable is closed."""
    ran: list[int] = []

    async def body() -> None:
        ran.append(1)

    loop = FakeLoop()
    scheduled: list[Any] = []

    def create_task(coro: Any) -> Any:
        scheduled.append(coro)
        raise Boom("after scheduling")

    loop.create_task = create_task  # type: ignore[method-assign]
    coro = body()
    with running(loop):
        _engine._run_hook(lambda arg: coro, None)
    (runner,) = scheduled
    assert coro.cr_frame is None  # closed
    assert _drive(runner) == [] and ran == []
    assert engine_errors.wheres() == ["hother.cancelable: cannot run async token callback"]


def test_report_error_argument_checks() -> None:
    with pytest.raises(TypeError, match="_report_error"):
        _engine._report_error("where")
    with pytest.raises(TypeError, match="_report_error"):
        _engine._report_error("where", "not an exception")
    with pytest.raises(UnicodeEncodeError):
        _engine._report_error("\udcff", ValueError())


# -- error reporting without a handler, with a raising handler ------------------------------------


@pytest.fixture
def unraisable() -> Iterator[list[Any]]:
    seen: list[Any] = []
    saved = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        yield seen
    finally:
        sys.unraisablehook = saved
        _engine._set_error_handler(token_module._log_engine_error)


def test_errors_without_a_handler_go_to_unraisablehook(unraisable: list[Any]) -> None:
    _engine._set_error_handler(None)
    _engine._report_error("where", Boom("lost"))
    assert len(unraisable) == 1 and isinstance(unraisable[0].exc_value, Boom)


def test_a_raising_error_handler_goes_to_unraisablehook(unraisable: list[Any]) -> None:
    def handler(where: str, exc: BaseException) -> None:
        raise KeyError("handler")

    _engine._set_error_handler(handler)
    _engine._report_error("where", Boom("lost"))
    assert len(unraisable) == 1 and isinstance(unraisable[0].exc_value, KeyError)
    assert unraisable[0].object is handler


def test_set_error_handler_argument_check() -> None:
    with pytest.raises(TypeError, match="callable or None"):
        _engine._set_error_handler(3)


# -- registry table --------------------------------------------------------------------------


def test_registry_table_key_checks() -> None:
    table = _engine.RegistryTable()
    with pytest.raises(TypeError, match="takes no arguments"):
        _engine.RegistryTable(1)
    for call in (
        lambda: table.discard(1, None),
        lambda: table.__setitem__(1, 2),
        lambda: table.get(1),
        lambda: table.pop(1),
        lambda: 1 in table,
    ):
        with pytest.raises(TypeError, match="key must be a str"):
            call()
    with pytest.raises(ValueError, match="NUL"):
        table["a\0b"] = 1
    with pytest.raises(ValueError, match="UTF-8"):
        table["\udcff"] = 1
    with pytest.raises(TypeError, match="takes from 1 to 2 arguments"):
        table.get()
    with pytest.raises(TypeError, match="takes exactly 2 arguments"):
        table.set("k")
    with pytest.raises(TypeError, match="takes exactly 2 arguments"):
        table.discard("k")
    with pytest.raises(KeyError):
        del table["missing"]
    assert len(table) == 0 and repr(table).endswith("len=0>")
