"""The engine's view of anyio's scopes on asyncio (shields inside a cancelled engine scope, the
companion anyio shield of a shielded engine scope), coroutines closed outside their loop, and
the ``_task_scopes`` introspection view (scope.c)."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio._backends._asyncio as anyio_asyncio
import pytest

from hother.cancelable import Cancellable, _engine

from .fakes import FakeLoop, FakeTask, fake_pair, fake_triple, running
from .isolated import run_python

CancelScope = _engine.CancelScope


def leave(scope: Any, exc: BaseException | None = None) -> Any:
    return scope.__exit__(None if exc is None else type(exc), exc, None)


def deliver(loop: FakeLoop, scope: Any, host: Any, other: Any) -> None:
    """Cancel ``scope`` (entered by ``host``) while ``other`` is the running task."""
    asyncio.tasks._current_tasks[loop] = other  # type: ignore[attr-defined]
    try:
        scope.cancel()
    finally:
        asyncio.tasks._current_tasks[loop] = host  # type: ignore[attr-defined]


# -- anyio scopes of the task being cancelled --------------------------------------------------


class State:
    """What anyio keeps per task (only ``cancel_scope`` is read)."""

    def __init__(self, cancel_scope: Any) -> None:
        self.cancel_scope = cancel_scope


class AnyioScope:
    def __init__(self, shield: Any, parent: Any = None) -> None:
        if shield is not None:
            self.shield = shield
        if parent is not False:
            self._parent_scope = parent


@pytest.mark.parametrize(
    ("state", "delivered"),
    [
        (object(), True),  # no cancel_scope attribute: ignored
        (State(None), True),  # no anyio scope
        (State(AnyioScope(shield=None)), True),  # a scope without .shield: ignored
        (State(AnyioScope(shield=False, parent=False)), True),  # no ._parent_scope: ignored
        (State(AnyioScope(shield=False, parent=AnyioScope(shield=True))), False),
        (State(AnyioScope(shield=True)), False),  # an anyio shield inside: not cancelled
    ],
    ids=["no-attr", "none", "no-shield", "no-parent", "shielded-parent", "shielded"],
)
def test_anyio_scopes_inside_a_cancelled_scope(state: Any, delivered: bool) -> None:
    loop, host, other = fake_triple()
    with running(loop, host):
        scope = CancelScope()
        scope.__enter__()
        anyio_asyncio._task_states[host] = state  # type: ignore[index]
        try:
            deliver(loop, scope, host, other)
            assert (len(host.cancel_messages) == 1) is delivered
        finally:
            del anyio_asyncio._task_states[host]  # type: ignore[attr-defined]
        leave(scope, asyncio.CancelledError() if delivered else None)


def test_task_that_cannot_be_weakly_referenced_is_still_cancelled() -> None:
    class SlotTask:
        __slots__ = ("__dict__",)

        def __init__(self) -> None:
            self.cancels = 0
            self._must_cancel = False
            self._fut_waiter = None

        def cancelling(self) -> int:
            return self.cancels

        def uncancel(self) -> int:
            self.cancels -= 1
            return self.cancels

        def done(self) -> bool:
            return False

        def cancel(self, msg: Any = None) -> bool:
            self.cancels += 1
            return True

    loop = FakeLoop()
    host, other = SlotTask(), FakeTask(loop)
    with running(loop, host):
        scope = CancelScope()
        scope.__enter__()
        deliver(loop, scope, host, other)
        assert host.cancels == 1
        assert leave(scope, asyncio.CancelledError()) is True


# -- coroutines closed outside their task or loop ----------------------------------------------


def test_generator_exit_from_another_task_detaches_the_scope() -> None:
    loop, host, other = fake_triple()
    with running(loop, host):
        outer = CancelScope(deadline=loop.now + 50)
        outer.__enter__()
        inner = CancelScope(deadline=loop.now + 10)
        inner.__enter__()
        asyncio.tasks._current_tasks[loop] = other  # type: ignore[attr-defined]
        closing = GeneratorExit()
        assert inner.__exit__(GeneratorExit, closing, None) is False  # closed elsewhere
        assert not inner.active
        assert _engine._task_scopes.get(host) is outer  # back to the parent
        assert _engine.loop_stats(loop)["deadlines"] == 1
        host.hash_budget = 1  # the dict lookup works, the removal does not: forgotten anyway
        assert outer.__exit__(GeneratorExit, closing, None) is False
        host.hash_budget = None
        assert not outer.active
        _engine._task_scopes.pop(host, None)
        assert _engine.loop_stats(loop)["active_scopes"] == 0


def test_generator_exit_outside_any_task_releases_an_operation() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        op = Cancellable()
        await op.__aenter__()
        task = asyncio.current_task()
        done = loop.create_future()

        def close_in_a_callback() -> None:  # no current task here
            op.__aexit__(GeneratorExit, GeneratorExit(), None)
            done.set_result(None)

        loop.call_soon(close_in_a_callback)
        await done
        assert not op.scope.active
        assert _engine.current_scope(task) is None
        assert op.is_cancelled

    asyncio.run(main())


# -- the _task_scopes introspection view ---------------------------------------------------


def test_task_scopes_view() -> None:
    view = _engine._task_scopes

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        with pytest.raises(TypeError, match="get"):
            view.get()
        with pytest.raises(TypeError, match="pop"):
            view.pop()
        with pytest.raises(TypeError, match=r"asyncio\.Task"):
            view.get(3)
        assert view.get(task, "default") == "default"
        with pytest.raises(KeyError):
            view[task]
        with pytest.raises(KeyError):
            view.pop(task)
        assert view.pop(task, None) is None
        assert 3 not in view and task not in view
        with CancelScope() as scope:
            assert view[task] is scope and task in view
            assert task in list(view) and len(view) >= 1
            with pytest.raises(TypeError, match="must be a CancelScope"):
                view[task] = "scope"
            other = asyncio.get_running_loop().create_future()
            view[other] = scope  # introspection writes go to the task's engine
            assert view.pop(other) is scope
            del view[task]
            assert task not in view
            view[task] = scope  # put back: the exit needs it
        with pytest.raises(KeyError):
            del view[task]
        with pytest.raises(TypeError, match=r"asyncio\.Task"):
            del view[3]

    asyncio.run(main())
    fresh_loop = asyncio.new_event_loop()
    try:
        future = fresh_loop.create_future()
        assert view.get(future) is None  # a loop without an engine
        with pytest.raises(KeyError):
            del view[future]
    finally:
        fresh_loop.close()

    class LoopRaises(asyncio.Future):  # type: ignore[type-arg]
        def get_loop(self) -> Any:
            raise KeyError("get_loop")

        def get_coro(self) -> Any:
            return None

    loop, _ = fake_pair()
    odd = LoopRaises(loop=loop)
    for call in (lambda: view.get(odd), lambda: view.pop(odd), lambda: view[odd]):
        with pytest.raises(KeyError, match="get_loop"):
            call()
    with pytest.raises(KeyError, match="get_loop"):
        odd in view  # noqa: B015
    with pytest.raises(KeyError, match="get_loop"):
        _engine.current_scope(odd)

    class ClassRaises:
        @property  # type: ignore[misc]
        def __class__(self) -> Any:
            raise KeyError("__class__")

    with pytest.raises(KeyError, match="__class__"):
        view.get(ClassRaises())


def test_task_scopes_view_pop_and_put_back_without_hashing() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        scope = CancelScope()
        scope.__enter__()
        task.hash_budget = 0  # host entries are keyed by identity: nothing hashes the task
        assert _engine._task_scopes.pop(task) is scope
        assert _engine._task_scopes.get(task) is None
        _engine._task_scopes[task] = scope
        assert _engine._task_scopes.get(task) is scope
        task.hash_budget = None
        assert leave(scope) is False


# -- the companion anyio shield and anyio's task table, with a fake anyio ----------------------

FAKE_ANYIO = """
import asyncio, sys, types
engine = load_engine()
backend = types.ModuleType("anyio._backends._asyncio")
sys.modules["anyio._backends._asyncio"] = backend
"""


def test_anyio_task_table_missing() -> None:
    out = run_python(
        FAKE_ANYIO
        + """
async def main():
    with engine.CancelScope(shield=True) as scope:  # anyio not usable: no companion
        inner = engine.CancelScope()
        with inner:
            scope.cancel()
            inner.cancel()
            await asyncio.sleep(0)
    return scope.cancelled_caught or inner.cancelled_caught
print(asyncio.run(main()))
"""
    )
    assert out.strip() == "True"


def test_anyio_task_table_of_an_unexpected_shape() -> None:
    out = run_python(
        FAKE_ANYIO
        + """
backend._task_states = types.SimpleNamespace(data=[])
async def main():
    with engine.CancelScope(shield=True):
        pass
    return "ok"
print(asyncio.run(main()))
"""
    )
    assert out.strip() == "ok"


def test_companion_anyio_shield_failures() -> None:
    out = run_python(
        FAKE_ANYIO
        + """
backend._task_states = types.SimpleNamespace(data={})
results = {}
reported = []
engine._set_error_handler(lambda where, exc: reported.append(where))

class CompanionScope:
    fail = None
    def __init__(self, shield):
        if self.fail == "init":
            raise ZeroDivisionError("init")
        self._shield = shield
    def __enter__(self):
        if self.fail == "enter":
            raise ZeroDivisionError("enter")
        return self
    def __exit__(self, *exc):
        if self.fail == "exit":
            raise ZeroDivisionError("exit")
        return False
    @property
    def shield(self):
        return self._shield
    @shield.setter
    def shield(self, value):
        if self.fail == "shield":
            raise ZeroDivisionError("shield")
        self._shield = value

async def attempt(name):
    scope = engine.CancelScope(shield=True)
    try:
        with scope:
            if name == "shield":
                try:
                    scope.shield = False
                except ZeroDivisionError:
                    results[name] = "raised"
                    return
            results[name] = "entered"
    except (ImportError, AttributeError, ZeroDivisionError) as exc:
        results[name] = type(exc).__name__
    assert not scope.active and engine.current_scope() is None, name

async def main():
    sys.modules["anyio"] = None
    await attempt("no-anyio")
    sys.modules["anyio"] = types.ModuleType("anyio")
    await attempt("no-CancelScope")
    sys.modules["anyio"].CancelScope = CompanionScope
    for fail in ("init", "enter", "exit", "shield", None):
        CompanionScope.fail = fail
        await attempt(str(fail))

asyncio.run(main())
print(sorted(results.items()), reported)
"""
    )
    assert out.strip() == (
        "[('None', 'entered'), ('enter', 'ZeroDivisionError'), ('exit', 'entered'), "
        "('init', 'ZeroDivisionError'), ('no-CancelScope', 'AttributeError'), "
        "('no-anyio', 'ModuleNotFoundError'), ('shield', 'raised')] "
        "['hother.cancelable: exiting the companion anyio shield']"
    )
