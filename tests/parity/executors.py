"""The interpreter of parity programs and its three executors (engine, anyio, trio).

Every executor runs the program on virtual time (``VirtualClockEventLoop`` from
:mod:`hother.cancelable.testing.clock` for asyncio, ``MockClock(autojump_threshold=0)`` for
trio) and returns the observable traces, one list per task:

* ``("cp" | "sleep", label, "ok" | "cancelled")`` for every await (``"start"``: the first
  await of a child task, which aligns it on its phase);
* ``("exit", scope, escaped, cancel_called, cancelled_caught)`` when a scope's ``with``
  block ends, ``("gexit", group, ...)`` the same for a task group and its cancel scope;
* ``("flags", scope, cancel_called, cancelled_caught)``, ``("finally", label)``,
  ``("caught", label, what)``;
* ``("escaped", what)`` / ``("done",)`` at the end of a task, and for the main task
  ``("final", "ok" | "cancelled")``: one more checkpoint after the program, to detect a
  cancellation that leaked out of it.

``escaped``/``what`` describe an exception as the sorted set of its leaves (exception groups
flattened): ``"Cancelled"``, ``"KeyError(L3)"``... -- trio wraps child failures in
exception groups where asyncio-based task groups re-raise a bare cancellation.

The canceller (its own trace, ``"canceller"``) records ``("xcancel", scope, how)``.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hother.cancelable import _engine
from hother.cancelable.backends.asyncio_backend import AsyncioTaskGroup
from hother.cancelable.testing.clock import VirtualClock, VirtualClockEventLoop

from .program import CANCELLER_PHASE, Op, Program, deadline_fraction, index_of, task_phase

Traces = dict[str, list[tuple[Any, ...]]]

MAX_LOOP_ITERATIONS = 200_000  # a program runs a few hundred; more means a busy loop
MAX_VIRTUAL_TIME = 10_000.0  # ticks; programs end well before


class SpinningLoopError(RuntimeError):
    """The event loop kept running callbacks without virtual time advancing (busy loop)."""


class _GuardedLoop(VirtualClockEventLoop):
    """The virtual-clock loop, failing loudly instead of spinning or running forever."""

    def __init__(self) -> None:
        super().__init__(VirtualClock())
        self._iterations = 0

    def _run_once(self) -> None:
        self._iterations += 1
        if self._iterations > MAX_LOOP_ITERATIONS:
            raise SpinningLoopError(f"more than {MAX_LOOP_ITERATIONS} loop iterations")
        if self.time() > MAX_VIRTUAL_TIME:
            raise SpinningLoopError(f"virtual time passed {MAX_VIRTUAL_TIME}")
        super()._run_once()  # type: ignore[misc]


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _join_thread(target: Callable[[], Any]) -> None:
    """Run ``target`` in a new plain thread and join it (errors are re-raised here)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=run, name="parity-canceller")
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the canceller thread hangs"
    if errors:  # pragma: no cover - a broken executor
        raise errors[0]


# -- executors ----------------------------------------------------------------------------------


class Executor:
    """One implementation of cancel scopes and task groups (see the subclasses)."""

    name = "?"
    cancelled: type[BaseException] = BaseException

    def run(self, program: Program) -> Traces:
        """Run ``program`` in a fresh event loop on virtual time; return its traces."""
        raise NotImplementedError

    def now(self) -> float:
        raise NotImplementedError

    def make_scope(self, deadline: float, shield: bool) -> Any:
        raise NotImplementedError

    async def sleep_until(self, when: float) -> None:
        raise NotImplementedError

    async def checkpoint(self) -> None:
        raise NotImplementedError

    def task_group(self) -> Any:
        raise NotImplementedError

    def cancel_from_thread(self, scope: Any) -> None:
        """Cancel ``scope`` from a plain thread (joined before returning)."""
        raise NotImplementedError

    def after_set_deadline(self, scope: Any) -> None:
        """Hook after ``scope.deadline = ...`` (see :class:`TrioExecutor`)."""

    def describe(self, exc: BaseException) -> str:
        """The sorted set of the leaves of ``exc`` (see the module docstring)."""
        names = set()
        for leaf in _leaves(exc):
            if isinstance(leaf, self.cancelled):
                names.add("Cancelled")
            elif type(leaf) is KeyError:
                names.add(f"KeyError({leaf.args[0]})")
            else:
                names.add(f"{type(leaf).__name__}: {leaf}")
        return "+".join(sorted(names))


class _AsyncioExecutor(Executor):
    cancelled = asyncio.CancelledError

    def run(self, program: Program) -> Traces:
        with asyncio.Runner(loop_factory=_GuardedLoop) as runner:
            result: Traces = runner.run(self._root(program))
            return result

    async def _root(self, program: Program) -> Traces:
        interp = Interpreter(self, program)
        canceller = asyncio.get_running_loop().create_task(interp.canceller())
        try:
            await interp.main()
        finally:
            canceller.cancel()
            try:
                await canceller
            except asyncio.CancelledError:
                pass
        self.check_clean(interp)
        return interp.traces

    def check_clean(self, interp: Interpreter) -> None:
        """Hook: check the implementation's bookkeeping after the program."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep_until(self, when: float) -> None:
        await asyncio.sleep(max(0.0, when - self.now()))

    async def checkpoint(self) -> None:
        await asyncio.sleep(0)


class EngineExecutor(_AsyncioExecutor):
    """Our C engine: ``_engine.CancelScope`` and ``AsyncioTaskGroup`` on asyncio."""

    name = "engine"

    def make_scope(self, deadline: float, shield: bool) -> Any:
        return _engine.CancelScope(deadline=deadline, shield=shield)

    def task_group(self) -> Any:
        return AsyncioTaskGroup()

    def cancel_from_thread(self, scope: Any) -> None:
        # The engine's cancel() is thread-safe by itself (it hops onto the loop).
        _join_thread(scope.cancel)

    def check_clean(self, interp: Interpreter) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        problems: list[tuple[Any, ...]] = []
        stats = _engine.loop_stats(loop)
        if stats["active_scopes"] or stats["deadlines"]:
            problems.append(("LEAK", "loop_stats", stats["active_scopes"], stats["deadlines"]))
        if task is not None and task.cancelling():
            problems.append(("LEAK", "cancelling", task.cancelling()))
        leftover = [t for t in _engine._task_scopes if t.get_loop() is loop]
        if leftover:
            problems.append(("LEAK", "task_scopes", len(leftover)))
        interp.traces["main"].extend(problems)


class AnyioExecutor(_AsyncioExecutor):
    """``anyio.CancelScope`` / ``anyio.create_task_group`` on asyncio."""

    name = "anyio"

    def make_scope(self, deadline: float, shield: bool) -> Any:
        import anyio

        return anyio.CancelScope(deadline=deadline, shield=shield)

    def task_group(self) -> Any:
        import anyio

        return anyio.create_task_group()

    def cancel_from_thread(self, scope: Any) -> None:
        # anyio's cancel() is not thread-safe: schedule it on the loop.
        loop = asyncio.get_running_loop()
        _join_thread(lambda: loop.call_soon_threadsafe(scope.cancel))


@contextmanager
def _trio_schedule(seed: int | None) -> Iterator[None]:
    """Make trio's scheduling of runnable tasks follow ``seed`` (it is random otherwise)."""
    if seed is None:
        yield
        return
    from trio._core import _run

    saved = _run._r
    _run._r = random.Random(seed)
    try:
        yield
    finally:
        _run._r = saved


@dataclass
class TrioExecutor(Executor):
    """trio: ``trio.CancelScope`` and nurseries under ``MockClock(autojump_threshold=0)``.

    ``seed`` fixes trio's scheduling order of runnable tasks (runs with different seeds
    must give the same traces: the program is race-free); ``None`` leaves it alone.
    """

    seed: int | None = None
    name = "trio"

    def __post_init__(self) -> None:
        import trio

        self.cancelled = trio.Cancelled

    def run(self, program: Program) -> Traces:
        import trio
        from trio.testing import MockClock

        with _trio_schedule(self.seed):
            result: Traces = trio.run(self._root, program, clock=MockClock(autojump_threshold=0))
        return result

    async def _root(self, program: Program) -> Traces:
        import trio

        interp = Interpreter(self, program)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(interp.canceller)
            try:
                await interp.main()
            finally:
                nursery.cancel_scope.cancel()
        return interp.traces

    def now(self) -> float:
        import trio

        return trio.current_time()

    def make_scope(self, deadline: float, shield: bool) -> Any:
        import trio

        return trio.CancelScope(deadline=deadline, shield=shield)

    async def sleep_until(self, when: float) -> None:
        import trio

        await trio.sleep_until(when)

    async def checkpoint(self) -> None:
        import trio

        await trio.sleep(0)

    def task_group(self) -> Any:
        import trio

        return trio.open_nursery()

    def cancel_from_thread(self, scope: Any) -> None:
        import trio

        token = trio.lowlevel.current_trio_token()
        _join_thread(lambda: token.run_sync_soon(scope.cancel))

    def after_set_deadline(self, scope: Any) -> None:
        # trio notices a deadline moved into the past at the next checkpoint (or when
        # cancel_called is read); anyio and the engine cancel at once. Reading the flag
        # removes that laziness without changing what the program observes.
        _ = scope.cancel_called


# -- the interpreter ----------------------------------------------------------------------------


@dataclass
class TaskCtx:
    """One task of the program: its phase, its trace and its open task groups."""

    name: str
    phase: float
    trace: list[tuple[Any, ...]]
    groups: list[Any] = field(default_factory=list)


class Interpreter:
    """Runs a :class:`Program` on one :class:`Executor` (see :mod:`.program` for the ops)."""

    def __init__(self, executor: Executor, program: Program) -> None:
        self.x = executor
        self.program = program
        self.scopes: dict[str, Any] = {}
        self.traces: Traces = {"main": [], "canceller": []}

    # -- time ---------------------------------------------------------------------------------

    def _deadline(self, value: Any, scope_name: str) -> float:
        if value == "inf":
            return math.inf
        now = self.x.now()
        if value == "now":
            return now
        base = math.floor(now) + deadline_fraction(index_of(scope_name))
        if value == "past":
            return base - 1
        return base + float(value)

    async def _await(self, ctx: TaskCtx, kind: str, label: str, when: float | None) -> None:
        try:
            if when is None:
                await self.x.checkpoint()
            else:
                await self.x.sleep_until(when)
        except self.x.cancelled:
            ctx.trace.append((kind, label, "cancelled"))
            raise
        ctx.trace.append((kind, label, "ok"))

    # -- tasks --------------------------------------------------------------------------------

    async def main(self) -> None:
        """The main task: the program, then one leak-detecting checkpoint."""
        ctx = TaskCtx("main", task_phase(0), self.traces["main"])
        try:
            await self.block(self.program.main, ctx)
        except BaseException as exc:
            ctx.trace.append(("escaped", self.x.describe(exc)))
        else:
            ctx.trace.append(("done",))
        try:
            await self.x.checkpoint()
        except self.x.cancelled:
            ctx.trace.append(("final", "cancelled"))
        else:
            ctx.trace.append(("final", "ok"))

    async def child(self, ops: tuple[Op, ...], ctx: TaskCtx) -> None:
        try:
            now = self.x.now()
            start = math.floor(now) + ctx.phase
            if start <= now:
                start += 1
            await self._await(ctx, "sleep", "start", start)
            await self.block(ops, ctx)
        except BaseException as exc:
            ctx.trace.append(("escaped", self.x.describe(exc)))
            raise
        ctx.trace.append(("done",))

    async def canceller(self) -> None:
        trace = self.traces["canceller"]
        for tick, how, target in self.program.actions:
            await self.x.sleep_until(tick + CANCELLER_PHASE)
            scope = self.scopes.get(target)
            if scope is None:
                trace.append(("xcancel", target, "not created yet"))
                continue
            if how == "thread":
                self.x.cancel_from_thread(scope)
            else:
                scope.cancel()
            trace.append(("xcancel", target, how))

    # -- ops ----------------------------------------------------------------------------------

    async def block(self, ops: tuple[Op, ...], ctx: TaskCtx) -> None:
        for op in ops:
            await self.op(op, ctx)

    async def op(self, op: Op, ctx: TaskCtx) -> None:
        kind = op[0]
        x = self.x
        if kind == "cp":
            await self._await(ctx, "cp", op[1], None)
        elif kind == "cp_catch":
            try:
                await self._await(ctx, "cp", op[1], None)
            except x.cancelled:
                pass
        elif kind == "sleep":
            await self._await(ctx, "sleep", op[1], math.floor(x.now()) + op[2] + ctx.phase)
        elif kind == "scope":
            await self._scope(op, ctx)
        elif kind == "cancel":
            self.scopes[op[1]].cancel()
        elif kind == "set_deadline":
            scope = self.scopes[op[1]]
            scope.deadline = self._deadline(op[2], op[1])
            x.after_set_deadline(scope)
        elif kind == "set_shield":
            self.scopes[op[1]].shield = op[2]
        elif kind == "flags":
            scope = self.scopes[op[1]]
            ctx.trace.append(("flags", op[1], scope.cancel_called, scope.cancelled_caught))
        elif kind == "raise":
            raise KeyError(op[1])
        elif kind == "try":
            try:
                await self.block(op[2], ctx)
            finally:
                ctx.trace.append(("finally", op[1]))
                await self.block(op[3], ctx)
        elif kind == "catch":
            try:
                await self.block(op[2], ctx)
            except* KeyError as group:
                ctx.trace.append(("caught", op[1], x.describe(group)))
        elif kind == "group":
            await self._group(op, ctx)
        elif kind == "spawn":
            name = op[1]
            child = TaskCtx(name, task_phase(index_of(name)), self.traces.setdefault(name, []))
            ctx.groups[-1].start_soon(self.child, op[2], child)
        else:  # pragma: no cover - a malformed program
            raise ValueError(f"unknown op {kind!r}")

    async def _scope(self, op: Op, ctx: TaskCtx) -> None:
        _, name, opts, body = op
        deadline = self._deadline(opts["deadline"], name) if "deadline" in opts else math.inf
        scope = self.x.make_scope(deadline, bool(opts.get("shield", False)))
        if opts.get("cancel_before"):
            scope.cancel()
        self.scopes[name] = scope
        escaped = "none"
        try:
            with scope:
                await self.block(body, ctx)
        except BaseException as exc:
            escaped = self.x.describe(exc)
            raise
        finally:
            ctx.trace.append(("exit", name, escaped, scope.cancel_called, scope.cancelled_caught))

    async def _group(self, op: Op, ctx: TaskCtx) -> None:
        _, name, body = op
        escaped = "none"
        scope: Any = None
        try:
            async with self.x.task_group() as group:
                scope = group.cancel_scope
                self.scopes[name] = scope
                ctx.groups.append(group)
                try:
                    await self.block(body, ctx)
                finally:
                    ctx.groups.pop()
        except BaseException as exc:
            escaped = self.x.describe(exc)
            raise
        finally:
            if scope is not None:
                ctx.trace.append(
                    ("gexit", name, escaped, scope.cancel_called, scope.cancelled_caught)
                )


EXECUTORS: dict[str, Callable[[], Executor]] = {
    "engine": EngineExecutor,
    "anyio": AnyioExecutor,
    "trio": TrioExecutor,
}


def run_program(impl: str, program: Program, **options: Any) -> Traces:
    """Run ``program`` on the executor named ``impl`` (``engine``, ``anyio``, ``trio``)."""
    executor: Executor = TrioExecutor(**options) if impl == "trio" else EXECUTORS[impl]()
    return executor.run(program)
