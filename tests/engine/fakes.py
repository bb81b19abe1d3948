"""Scriptable stand-ins for an asyncio event loop and task, to drive the engine's error paths.

The engine talks to the loop and to tasks only through a handful of methods and attributes
(``loop.time/call_at/call_soon/call_soon_threadsafe``, ``task.cancel/uncancel/cancelling/done``,
``task._must_cancel``/``_fut_waiter``/``get_coro()``). :class:`FakeLoop` and :class:`FakeTask`
implement exactly those, record what the engine did, and raise on demand (``fail`` maps a
method name to the exception to raise), so a test can make any of them misbehave at a chosen
moment and check that the engine propagates (or reports) the error and stays consistent.

:func:`running` makes a fake loop the running loop of the calling thread (and a fake task
its current task) the way asyncio does it, through ``asyncio.events._set_running_loop`` and
``asyncio.tasks._current_tasks``; it must be used where no real loop runs (sync tests).
"""

from __future__ import annotations

import asyncio
import asyncio.events
import asyncio.tasks
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class Misbehaving:
    """Base of the fakes: ``fail[name]`` is raised by the method ``name`` (once or always)."""

    def __init__(self) -> None:
        self.fail: dict[str, BaseException] = {}
        self.fail_once: set[str] = set()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def _enter(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        exc = self.fail.get(name)
        if exc is not None:
            if name in self.fail_once:
                del self.fail[name]
            raise exc

    def count(self, name: str) -> int:
        """How many times the method ``name`` was called."""
        return sum(1 for called, _ in self.calls if called == name)


class FakeHandle:
    """What ``call_at``/``call_soon`` return: cancellable, weak-referenceable."""

    def __init__(self, loop: FakeLoop, when: float | None, fn: Callable[..., Any], args: Any):
        self.loop = loop
        self.when = when
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.loop._enter("handle.cancel")
        self.cancelled = True

    def run(self) -> Any:
        return self.fn(*self.args)


class FakeLoop(Misbehaving, asyncio.AbstractEventLoop):
    """An event loop reduced to what the engine calls; time is set by hand (``now``)."""

    def __init__(self, now: float = 1000.0) -> None:
        Misbehaving.__init__(self)
        self.now = now
        self.handles: list[FakeHandle] = []
        self.hash_fails = False
        self.handle_factory: Callable[[FakeHandle], Any] | None = None

    def __hash__(self) -> int:
        if self.hash_fails:
            raise RuntimeError("unhashable loop")
        return id(self) >> 4

    def __eq__(self, other: object) -> bool:
        return self is other

    def get_debug(self) -> bool:
        return False

    def time(self) -> float:
        self._enter("time")
        return self.now

    def _handle(self, when: float | None, fn: Callable[..., Any], args: Any) -> Any:
        handle = FakeHandle(self, when, fn, args)
        self.handles.append(handle)
        return handle if self.handle_factory is None else self.handle_factory(handle)

    def call_at(self, when: float, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        self._enter("call_at", when)
        return self._handle(when, fn, args)

    def call_soon(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        self._enter("call_soon")
        return self._handle(None, fn, args)

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        self._enter("call_soon_threadsafe")
        return self._handle(None, fn, args)

    def create_task(self, coro: Any) -> Any:
        self._enter("create_task")
        return FakeFutureTask(coro)

    def pending(self, kind: str = "soon") -> list[FakeHandle]:
        """Handles not cancelled nor run yet (``kind``: "soon" or "at")."""
        return [
            h
            for h in self.handles
            if not h.cancelled and (h.when is None) == (kind == "soon") and h.fn is not None
        ]

    def run_soon(self) -> list[Any]:
        """Run (once) every pending call_soon handle; returns their results."""
        out = []
        for h in self.pending("soon"):
            h.cancelled = True
            out.append(h.run())
        return out


class FakeFutureTask:
    """What ``FakeLoop.create_task`` returns (enough for the hook runner's bookkeeping)."""

    def __init__(self, coro: Any) -> None:
        self.coro = coro
        self.fail_add_done_callback: BaseException | None = None

    def __hash__(self) -> int:
        return id(self) >> 4

    def add_done_callback(self, fn: Callable[..., Any]) -> None:
        if self.fail_add_done_callback is not None:
            raise self.fail_add_done_callback


class FakeCoro:
    """What ``FakeTask.get_coro()`` returns (the started/not-started probe reads these)."""

    cr_running = False
    cr_suspended = True
    cr_frame = None


class FakeTask(Misbehaving, asyncio.Future):  # type: ignore[type-arg]
    """An asyncio task reduced to what the engine calls; ``cancelling()`` is tracked.

    A future of ``loop`` (so ``get_loop()`` and the engine's introspection work), whose
    task methods are scripted.
    """

    def __init__(self, loop: Any) -> None:
        Misbehaving.__init__(self)
        asyncio.Future.__init__(self, loop=loop)
        self._cancelling = 0
        self.is_done = False
        self._must_cancel = False
        self._fut_waiter: Any = None
        self.cancel_messages: list[Any] = []
        self.hash_fails = False
        self.hash_budget: int | None = None  # hash() works this many more times, then fails
        self.cancelling_value: Any = None

    def __hash__(self) -> int:
        if self.hash_budget is not None:
            if self.hash_budget <= 0:
                raise RuntimeError("unhashable task")
            self.hash_budget -= 1
        if self.hash_fails:
            raise RuntimeError("unhashable task")
        return id(self) >> 4

    def __eq__(self, other: object) -> bool:
        return self is other

    def cancel(self, msg: Any = None) -> bool:
        self._enter("cancel", msg)
        self.cancel_messages.append(msg)
        self._cancelling += 1
        return True

    def uncancel(self) -> int:
        self._enter("uncancel")
        if self._cancelling > 0:
            self._cancelling -= 1
        return self._cancelling

    def cancelling(self) -> Any:
        self._enter("cancelling")
        return self._cancelling if self.cancelling_value is None else self.cancelling_value

    def done(self) -> bool:
        self._enter("done")
        return self.is_done

    def get_coro(self) -> Any:
        self._enter("get_coro")
        return FakeCoro()


def fake_pair() -> tuple[FakeLoop, FakeTask]:
    """A fake loop and a fake task of it."""
    loop = FakeLoop()
    return loop, FakeTask(loop)


def fake_triple() -> tuple[FakeLoop, FakeTask, FakeTask]:
    """A fake loop and two fake tasks of it (a scope's host and another running task)."""
    loop = FakeLoop()
    return loop, FakeTask(loop), FakeTask(loop)


@contextmanager
def running(loop: Any, task: Any = None) -> Iterator[None]:
    """Make ``loop`` the running loop of this thread and ``task`` its current task."""
    assert asyncio.events._get_running_loop() is None, "a real loop runs in this thread"
    asyncio.events._set_running_loop(loop)
    if task is not None:
        asyncio.tasks._current_tasks[loop] = task  # type: ignore[attr-defined]
    try:
        yield
    finally:
        asyncio.events._set_running_loop(None)
        if task is not None:
            hash_fails = getattr(loop, "hash_fails", False)
            if hash_fails:
                loop.hash_fails = False
            asyncio.tasks._current_tasks.pop(loop, None)  # type: ignore[attr-defined]
            if hash_fails:
                loop.hash_fails = True


def engine_of(loop: Any) -> Any:
    """The engine's per-loop state object attached to ``loop`` (a ``LoopEngine``)."""
    return loop.__dict__["_hother_cancelable_engine"]
