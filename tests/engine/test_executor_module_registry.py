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
