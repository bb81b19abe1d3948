"""Allocation-failure sweeps of the engine (run as a script by test_nomem.py).

Usage: ``python nomem_sweep.py MODE SCENARIO...`` with MODE ``full`` (every allocation index)
or ``sample`` (a stride through the range). Prints one JSON object per scenario.

Each attempt runs in a forked child: the child builds the scenario's state, makes the n-th
allocation fail with ``_testcapi.set_nomemory(n, n + 1)`` around the engine calls under test
(:func:`guarded`), removes the hooks, then checks the outcome and the engine state and runs a
full garbage collection (a reference-count error shows up there as a crash). The attempt's
verdict goes back through a pipe; a child killed by a signal is a crash at that index. The
sweep of a scenario ends after ``STOP_AFTER_OK`` consecutive attempts that completed without
an allocation failure reaching them (the index is past the scenario's allocations).

Children leave through the C library's ``exit()``: no interpreter finalisation (so the parent's
state, shared by the fork, is not torn down n times), but the coverage counters of an
instrumented engine are still written.

Verdicts: ``ok`` (nothing failed: the index is past the operation), ``memory`` (a clean
``MemoryError``, or the engine swallowed/reported the failure and stayed consistent),
``problem`` (another exception, an inconsistent state, a failed check).
"""

from __future__ import annotations

import _testcapi
import asyncio
import ctypes
import gc
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any


def _engine_of_the_parent() -> None:
    """Import the engine from the file the parent test run uses (HOTHER_ENGINE_SO)."""
    import importlib.abc
    import importlib.util

    so = os.environ.get("HOTHER_ENGINE_SO")
    if not so:
        return

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
            if fullname == "hother.cancelable._engine":
                return importlib.util.spec_from_file_location(fullname, so)
            return None

    sys.meta_path.insert(0, Finder())


_engine_of_the_parent()

from hother.cancelable import Cancellable, CancellationReason, _engine  # noqa: E402
from hother.cancelable.core.token import CancellationToken  # noqa: E402

if os.environ.get("HOTHER_ENGINE_SO"):
    assert os.path.samefile(_engine.__file__ or "", os.environ["HOTHER_ENGINE_SO"])

CancelScope = _engine.CancelScope
LIBC = ctypes.CDLL(None)
STOP_AFTER_OK = 12
ATTEMPT_TIMEOUT = 10
MAX_INDEX = 2500

OK, EXC = "ok", "exc"

# Argument checks made with PyObject_HasAttr (which swallows every error): under memory
# pressure they report the argument as invalid instead of raising the MemoryError.
MASKING = [
    (TypeError, "must be an asyncio.Task"),
    (TypeError, "deadline must be a real number"),
    (TypeError, "executor must be"),
]
TRAP = bool(os.environ.get("H16_TRAP"))


class Attempt:
    """What one forked attempt observed."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.failed = False  # a MemoryError (or a reported one) was seen
        self.problems: list[str] = []
        self.reported: list[tuple[str, str]] = []

    def problem(self, text: str, category: str = "hard") -> None:
        self.problems.append(f"[{category}] {text}")

    def check(self, condition: bool, text: str, category: str = "hard") -> None:
        if not condition:
            self.problem(text, category)


_current: Attempt | None = None


def _report(where: str, exc: BaseException) -> None:
    assert _current is not None
    _current.reported.append((where, type(exc).__name__))
    if isinstance(exc, MemoryError):
        _current.failed = True
    else:
        _current.problem(f"reported {type(exc).__name__}: {exc!r} ({where})")


def guarded(at: Attempt, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """Call ``fn`` with the ``at.n``-th allocation failing; classify the outcome."""
    if TRAP:
        os.kill(os.getpid(), 5)  # debugging under gdb: stop before the window opens
    _testcapi.set_nomemory(at.n, at.n + 1)
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        _testcapi.remove_mem_hooks()
        if isinstance(exc, MemoryError):
            at.failed = True
        elif any(isinstance(exc, t) and text in str(exc) for t, text in MASKING):
            at.failed = True
            at.problem(f"{type(exc).__name__}: {exc}", "masked")
        elif isinstance(exc, SystemError) and str(exc).startswith("<function "):
            # CPython 3.11 loses a MemoryError raised while it materialises the frame object
            # of a Python function (frame.c take_ownership): not the engine's code
            at.failed = True
            at.problem(f"{type(exc).__name__}: {exc}", "cpython")
        else:
            chain = exc.__context__ or exc.__cause__
            at.problem(
                f"{type(exc).__name__}: {exc} (context: {chain!r})\n"
                + "".join(traceback.format_exception(exc))[-1500:]
            )
        return EXC, exc
    _testcapi.remove_mem_hooks()
    return OK, result


# -- scenarios -------------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[[Attempt], None]] = {}


def scenario(fn: Callable[[Attempt], None]) -> Callable[[Attempt], None]:
    SCENARIOS[fn.__name__] = fn
    return fn


def in_loop(at: Attempt, main: Callable[[], Any]) -> None:
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda loop, context: None)  # tasks lost by asyncio: silent
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def scope_state_ok(at: Attempt, task: Any, expected: Any, what: str) -> None:
    at.check(_engine.current_scope(task) is expected, f"{what}: task left inside {expected!r}")


class enter:
    """``with enter(at, scope):`` is ``with scope:`` that records a half-entered scope.

    A failed ``__enter__`` must leave the scope inactive (``__exit__`` never runs for it);
    one left active is reported in the "half-entered" category and left here.
    """

    def __init__(self, at: Attempt, scope: Any) -> None:
        self.at = at
        self.scope = scope
        self._enter = scope.__enter__  # bound before the failure window, like a with statement
        self._exit = scope.__exit__

    def __enter__(self) -> Any:
        try:
            return self._enter()
        except BaseException:
            if self.scope.active:
                self.at.problem(f"failed enter left {self.scope!r} active", "half-entered")
                task = self.scope.host_task
                if task is not None and _engine.current_scope(task) is self.scope:
                    _testcapi.remove_mem_hooks()
                    self.scope.__exit__(None, None, None)
            raise

    def __exit__(self, *exc: Any) -> Any:
        return self._exit(*exc)


@scenario
def scope_enter_exit(at: Attempt) -> None:
    """Enter and leave a scope (the first use creates the loop's engine)."""

    async def main() -> None:
        task = asyncio.current_task()
        scope = CancelScope()

        def op() -> None:
            with enter(at, scope):
                pass

        guarded(at, op)
        at.check(not scope.active, "scope still active")
        scope_state_ok(at, task, None, "after")
        with CancelScope() as again:  # usable afterwards
            await asyncio.sleep(0)
        at.check(not again.active, "a fresh scope does not work afterwards")

    in_loop(at, main)


@scenario
def scope_deadlines(at: Attempt) -> None:
    """Deadline scopes: heap, timer (re)arming, deadline changes, expiry at enter."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        outer = CancelScope(deadline=loop.time() + 100)
        inner = CancelScope(deadline=loop.time() + 50)
        expired = CancelScope(deadline=loop.time() - 1)

        def op() -> None:
            with enter(at, outer), enter(at, inner):
                inner.deadline = loop.time() + 20
                inner.deadline = loop.time() + 200
                with enter(at, expired):
                    pass

        guarded(at, op)
        for scope in (expired, inner, outer):
            at.check(not scope.active, f"{scope!r} still active")
        scope_state_ok(at, task, None, "after")
        at.check(_engine.loop_stats()["deadlines"] == 0, "deadline left in the heap")
        with CancelScope(deadline=loop.time() + 0.001) as again:
            await asyncio.sleep(10)
        at.check(again.cancelled_caught, "a deadline does not fire afterwards")

    in_loop(at, main)


@scenario
def scope_cancel_delivery(at: Attempt) -> None:
    """Cancel a scope whose host task is blocked (delivery) and with a reason."""

    async def main() -> None:
        scope = CancelScope()
        entered = asyncio.Event()

        async def host(scope: Any, entered: asyncio.Event) -> str:
            with scope:
                entered.set()
                await asyncio.sleep(100)
                return "not cancelled"
            return "caught"

        task = asyncio.create_task(host(scope, entered))
        await entered.wait()
        kind, _ = guarded(at, scope.cancel, reason="stop")
        if kind == EXC and not scope.cancel_called:
            scope.cancel(reason="stop")  # failed before doing anything: try again
        at.check(scope.cancel_called, "cancel() did not mark the scope")
        if kind == OK:
            result = await asyncio.wait_for(task, 10)
            at.check(result == "caught", f"host ended {result!r}")
            at.check(_engine.current_scope(task) is None, "host left inside")
        # after a failure the host may never wake up: asyncio's own Future.cancel() loses
        # the task's wake-up when its call_soon fails; the engine must still work
        again, ready = CancelScope(), asyncio.Event()
        other = asyncio.create_task(host(again, ready))
        await ready.wait()
        again.cancel()
        at.check(await asyncio.wait_for(other, 10) == "caught", "the engine is broken")

    in_loop(at, main)


@scenario
def scope_cancel_from_thread(at: Attempt) -> None:
    """cancel() from a thread without the scope's loop: the hop to the loop."""
    loop = asyncio.new_event_loop()
    scope = CancelScope()

    async def enter() -> None:
        scope.__enter__()

    task = loop.create_task(enter())
    loop.run_until_complete(task)
    kind, _ = guarded(at, scope.cancel, reason="afar")
    if kind == EXC:
        scope.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    at.check(scope.cancel_called, "the hop never ran")
    _engine._task_scopes.pop(task, None)
    loop.close()


@scenario
def engine_callbacks(at: Attempt) -> None:
    """The engine's timer and re-delivery callbacks, called with work to do."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        scopes = [CancelScope(deadline=loop.time() + d) for d in (0.0005, 0.001, 100)]
        done = asyncio.Event()

        async def host(scope: Any) -> None:
            with scope:
                await done.wait()

        tasks = [asyncio.create_task(host(s)) for s in scopes]
        await asyncio.sleep(0)
        engine = loop._hother_cancelable_engine  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)  # the first two deadlines are past, not yet processed?

        def op() -> None:
            engine._on_timer()
            engine._redeliver()

        guarded(at, op)
        scopes[2].cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        at.check(all(not s.active for s in scopes), "a scope stayed active")

    in_loop(at, main)


@scenario
def adopt_and_release(at: Attempt) -> None:
    """adopt_task (a task group's child) into a cancelled scope, then its release."""

    async def main() -> None:
        task = asyncio.current_task()
        with CancelScope() as scope:
            child = asyncio.get_running_loop().create_task(asyncio.sleep(10))
            scope.cancel()
            kind, _ = guarded(at, _engine.adopt_task, child, scope)
            if kind == EXC:
                child.cancel()
            try:
                await asyncio.wait_for(child, 10)
            except asyncio.CancelledError:
                pass
            await asyncio.sleep(0)
            at.check(_engine.current_scope(child) is None, "the adopted task was not released")
        scope_state_ok(at, task, None, "after")

    in_loop(at, main)


@scenario
def scope_objects(at: Attempt) -> None:
    """Construction, repr, introspection functions."""

    async def main() -> None:
        def op() -> None:
            scope = CancelScope(deadline=1.5, shield=True)
            repr(scope)
            with scope:
                _engine.current_scope()
                _engine.loop_stats()
                _engine.armed_timers()
                scope.shield = False
            _engine.live_objects()

        guarded(at, op)

    in_loop(at, main)


@scenario
def scope_groups_and_shields(at: Attempt) -> None:
    """Unshielding inside a cancelled parent; exception groups at exit."""

    async def main() -> None:
        task = asyncio.current_task()
        outer = CancelScope()
        inner = CancelScope(shield=True)
        other = CancelScope()

        def op() -> None:
            try:
                with enter(at, outer):
                    with enter(at, inner):
                        outer.cancel()
                        inner.shield = False
                    raise BaseExceptionGroup("g", [asyncio.CancelledError(), ValueError("v")])
            except BaseExceptionGroup as rest:
                if rest.exceptions[0].args != ("v",):
                    raise
            with enter(at, other):
                other.cancel()
                raise asyncio.CancelledError

        guarded(at, op)
        for scope in (other, inner, outer):
            at.check(not scope.active, f"{scope!r} still active")
        scope_state_ok(at, task, None, "after")
        for _ in range(task.cancelling()):
            task.uncancel()
        await asyncio.sleep(0)

    in_loop(at, main)


@scenario
def scope_misc(at: Attempt) -> None:
    """A reason given before enter, repr, the introspection view, a companion anyio shield."""
    import anyio._backends._asyncio  # noqa: F401  (the companion shield needs anyio loaded)

    async def main() -> None:
        task = asyncio.current_task()
        early = CancelScope()
        shielded = CancelScope(shield=True)

        def op() -> None:
            early.cancel(reason="early")
            repr(early)
            list(_engine._task_scopes)
            with enter(at, shielded):
                pass

        guarded(at, op)
        at.check(not shielded.active, "shielded scope still active")
        scope_state_ok(at, task, None, "after")

    in_loop(at, main)


@scenario
def hook_spawn(at: Attempt) -> None:
    """An async callback run by _run_hook on the loop (a task kept until done)."""

    async def main() -> None:
        ran: list[int] = []

        async def callback() -> None:
            ran.append(1)

        coro = callback()
        kind, _ = guarded(at, _engine._run_hook, lambda arg: coro, None)
        for _ in range(3):
            await asyncio.sleep(0)
        if kind == OK and not ran:
            coro.close()
            at.failed = True  # could not be spawned: reported (and the coroutine closed)
        at.check(
            len(_engine._pending_hook_tasks) == 0, "a hook task is kept alive", "hook-task-kept"
        )
        _engine._pending_hook_tasks.clear()

    in_loop(at, main)


# -- Cancellable ---------------------------------------------------------------------------


@scenario
def cancellable_fast_path(at: Attempt) -> None:
    """Enter/exit on the fast path, with a token hook and a timeout; immediates exhausted."""

    async def main() -> None:
        task = asyncio.current_task()
        hold = [Cancellable() for _ in range(40)]
        held = [op.__aenter__() for op in hold]  # the immediate free list is empty now
        op = Cancellable.with_timeout(100, name="swept")
        op._token  # noqa: B018  (the hook is registered by the fast enter)

        def run() -> None:
            op.__aenter__()
            op._token  # noqa: B018
            op.__aexit__(None, None, None)

        before = _engine.current_scope(task)
        kind, _ = guarded(at, run)
        inner = _engine.current_scope(task)
        if kind == EXC and inner is not before:
            if inner is not None and inner is not op.scope:  # an orphan scope of a failed enter
                at.problem(f"failed enter left {inner!r} active", "half-entered")
                inner.__exit__(None, None, None)
            elif op.scope is not None and op.scope.active:
                op.scope.__exit__(None, None, None)
        for o in reversed(hold):
            o.__aexit__(None, None, None)
        del held
        scope_state_ok(at, task, None, "after")
        async with Cancellable.with_timeout(100) as again:
            await asyncio.sleep(0)
        at.check(again.is_completed, "a fresh operation does not complete")

    in_loop(at, main)


@scenario
def cancellable_with_token(at: Attempt) -> None:
    """with_token on the fast path: the operation's token is linked to two external tokens
    at enter and unlinked at exit; a failure at any step leaves no link and no scope."""

    async def main() -> None:
        task = asyncio.current_task()
        a, b = CancellationToken(), CancellationToken()
        async with Cancellable.with_token(a):  # warm: the backend and the token class
            pass
        op = Cancellable.with_token(a)
        op._external_tokens.append(b)

        def run() -> None:
            op.__aenter__()
            op.__aexit__(None, None, None)

        kind, _ = guarded(at, run)
        if kind == EXC and op.scope is not None and op.scope.active:
            op.__aexit__(None, None, None)  # entered, and the exit failed before its cleanup
        at.check(a._hook_count == 0 and b._hook_count == 0, "a link was left behind")
        scope_state_ok(at, task, None, "after")
        async with Cancellable.with_token(a) as again:
            await asyncio.sleep(0)
        at.check(again.is_completed and a._hook_count == 0, "a fresh operation does not complete")

    in_loop(at, main)


@scenario
def cancellable_token_inside(at: Attempt) -> None:
    """The token created while the fast path runs; cancel it; exit with its reason."""

    async def main() -> None:
        op = Cancellable()
        await op.__aenter__()

        def run() -> None:
            token = op._token
            token._cancel(CancellationReason.MANUAL, "stop")

        guarded(at, run)
        try:
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            pass
        exc = asyncio.CancelledError()
        kind, _ = guarded(at, op.__aexit__, asyncio.CancelledError, exc, None)
        if kind == EXC and op.scope.active:
            op.__aexit__(asyncio.CancelledError, exc, None)
        task = asyncio.current_task()
        for _ in range(task.cancelling()):
            task.uncancel()
        at.check(not op.scope.active, "scope left active")

    in_loop(at, main)


@scenario
def cancellable_construction(at: Attempt) -> None:
    """Constructors, with_timeout forms, lazy attributes and their setters."""

    def op() -> None:
        parent = Cancellable(name="parent")
        child = Cancellable("id", "child", parent, {"k": 1}, False)
        Cancellable.with_timeout(1.5, metadata={"a": 1})
        Cancellable.with_timeout(timeout=2, name="t", register_globally=False)
        timed = Cancellable.with_timeout(3)
        timed._name  # noqa: B018
        timed._sources  # noqa: B018
        child._children  # noqa: B018
        child._metadata  # noqa: B018
        child._shields  # noqa: B018
        child._start_time = None
        child._end_time  # noqa: B018
        Custom.with_timeout(2)
        again = Cancellable.with_timeout(3)
        again._sources = []

    class Custom(Cancellable):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)

    guarded(at, op)


@scenario
def cancellable_slow_enter(at: Attempt) -> None:
    """The Python path with a fast timeout to materialise (register_globally)."""

    async def main() -> None:
        task = asyncio.current_task()
        op = Cancellable.with_timeout(50, register_globally=True)
        kind, awaitable = guarded(at, op.__aenter__)
        if kind == OK:
            await awaitable
            await op.__aexit__(None, None, None)
        scope_state_ok(at, task, None, "after")

    in_loop(at, main)


@scenario
def cancellable_exit_outcomes(at: Attempt) -> None:
    """Fast exits with an error, a cancellation and a generator close."""

    async def main() -> None:
        task = asyncio.current_task()
        for exc in (ValueError(12345), asyncio.CancelledError(), GeneratorExit()):
            op = Cancellable()
            await op.__aenter__()
            kind, _ = guarded(at, op.__aexit__, type(exc), exc, None)
            if kind == EXC and op.scope.active:
                op.__aexit__(type(exc), exc, None)
            at.check(not op.scope.active, "scope left active")
            if op._error == "<unprintable exception>":
                at.failed = True  # str(exc) failed: absorbed, recorded as unprintable
        scope_state_ok(at, task, None, "after")

    in_loop(at, main)


@scenario
def cancellable_trio(at: Attempt) -> None:
    """The trio fast path: enter, timeout, exit."""
    import trio

    from hother.cancelable.backends import get_backend

    get_backend("anyio")  # imported before the window (the import machinery masks errors)

    async def main() -> None:
        async with Cancellable():  # the trio fast path is probed (once) before the window
            pass
        op = Cancellable.with_timeout(100)
        op._token  # noqa: B018  (the token hook is registered by the enter)
        kind, awaitable = guarded(at, op.__aenter__)
        if kind == OK:
            await awaitable
            at.check(isinstance(op.scope, trio.CancelScope), "not on the trio fast path")
            kind2, _ = guarded(at, op.__aexit__, None, None, None)
            if kind2 == EXC and op.status.value == "running":
                at.problem("exit failed before recording the outcome")

    trio.run(main)


@scenario
def cancellable_trio_lazy(at: Attempt) -> None:
    """The lazy trio scope: made by a cancel inside the block, and by an enter whose token is
    cancelled already; trio's status tree is whole afterwards whatever failed."""
    import trio

    from hother.cancelable.backends import get_backend

    get_backend("anyio")

    async def main() -> None:
        async with Cancellable():  # the trio fast path is probed (once) before the window
            pass
        task = trio.lowlevel.current_task()
        before = task._cancel_status
        children = set(before._children)

        op = Cancellable()
        op._token  # noqa: B018
        await op.__aenter__()
        guarded(at, op.cancel_sync)  # the hook makes the scope and cancels it
        exc: BaseException | None = None
        try:
            await trio.lowlevel.checkpoint()
        except trio.Cancelled as err:
            exc = err
        await op.__aexit__(type(exc) if exc else None, exc, None)
        at.check(op.status.value != "running", "the operation is still running")

        op2 = Cancellable()
        op2.cancel_sync()
        kind, awaitable = guarded(at, op2.__aenter__)
        if kind == OK:
            await awaitable
            exc = None
            try:
                await trio.lowlevel.checkpoint()
            except trio.Cancelled as err:
                exc = err
            await op2.__aexit__(type(exc) if exc else None, exc, None)
        at.check(task._cancel_status is before, "the task is not back at its cancel status")
        at.check(set(before._children) == children, "a status of ours was left in trio's tree")
        at.check(task in before._tasks, "the task left its status's task set")

    trio.run(main)


# -- tokens ---------------------------------------------------------------------------------


@scenario
def token_hooks_and_links(at: Attempt) -> None:
    """Hooks (array growth, removal), a chain of links deeper than the cascade stack."""

    def op() -> list[Any]:
        root = CancellationToken()
        chain = [root]
        for _ in range(6):
            nxt = CancellationToken()
            nxt._link_from(chain[-1])
            chain.append(nxt)
        seen: list[Any] = []
        handles = [t._add_hook(seen.append) for t in chain for _ in range(3)]
        chain[1]._remove_hook(handles[3])
        root._cancel(CancellationReason.MANUAL, "stop")
        plain = CancellationToken()
        plain._link_from(root)  # already cancelled: cancelled at once, reason PARENT
        late = CancellationToken()
        late._link_from(root, preserve_reason=True)
        late.id  # noqa: B018
        late.cancelled_at  # noqa: B018
        late._unlink_from(root)
        return chain

    kind, chain = guarded(at, op)
    if kind == OK:  # the cascade allocates nothing: every link is followed
        at.check(all(t.is_cancelled for t in chain), "a linked token was not cancelled")


@scenario
def token_collect_async(at: Attempt) -> None:
    """Collected async callbacks and spawned ones (executor.c)."""

    async def main() -> None:
        token = CancellationToken()
        ran: list[int] = []

        async def cb(t: Any) -> None:
            ran.append(1)

        for _ in range(3):
            token._add_hook(cb)
        other = CancellationToken()
        other._add_hook(cb)

        def op() -> Any:
            _won, collected = token._cancel(CancellationReason.MANUAL, collect=True)
            other._cancel(CancellationReason.MANUAL)
            return collected

        kind, collected = guarded(at, op)
        if kind == OK:
            for aw in collected:
                await aw
        elif token.is_cancelled:  # other._cancel failed: op's result (collected) is lost
            at.failed = True
        for _ in range(5):
            await asyncio.sleep(0)

    in_loop(at, main)


# what the engine reports for one async callback it could not hand back or spawn
CALLBACK_REPORTS = (
    "hother.cancelable: token callback raised",
    "hother.cancelable: cannot collect async token callback",
    "hother.cancelable: cannot dispatch token callback",
    "hother.cancelable: cannot run async token callback",
)


@scenario
def token_collect_won(at: Attempt) -> None:
    """One ``_cancel(collect=True)`` (root token + a linked one): a failed call leaves both
    tokens untouched; a won one accounts for every async callback: handed back (collected),
    spawned (when not "here") or reported, each exactly once and never silently dropped."""

    async def main() -> None:
        token = CancellationToken()
        linked = CancellationToken()
        linked._link_from(token)
        started: list[int] = []

        def callback(i: int) -> Callable[[Any], Any]:
            async def cb(t: Any) -> None:
                started.append(i)

            return cb

        for i in range(3):
            token._add_hook(callback(i))
        linked._add_hook(callback(3))
        before = len(at.reported)
        kind, result = guarded(at, token._cancel, CancellationReason.MANUAL, None, True)
        reports = [r for r in at.reported[before:] if r[0] in CALLBACK_REPORTS]
        if kind == EXC:
            at.check(not token.is_cancelled, "a failed _cancel cancelled the token")
            at.check(not linked.is_cancelled, "a failed _cancel cancelled a link")
            at.check(not reports, f"a failed _cancel ran callbacks: {reports}")
            return
        won, collected = result
        at.check(won is True and linked.is_cancelled, "the cancel was not won")
        for aw in collected:
            await aw
        for _ in range(5):  # callbacks dispatched through the loop instead of collected
            await asyncio.sleep(0)
        at.check(len(started) == len(set(started)), f"a callback ran twice: {started}")
        at.check(
            len(started) + len(reports) == 4,
            f"callbacks lost: {len(started)} ran, {len(reports)} reported, 4 registered",
        )

    in_loop(at, main)


@scenario
def token_new_and_init(at: Attempt) -> None:
    """Token construction, pre-cancelled tokens, hooks added to a cancelled token."""
    from datetime import UTC, datetime

    def op() -> None:
        t = _engine.TokenCore(
            id="x",
            is_cancelled=True,
            reason=CancellationReason.TIMEOUT,
            message="m",
            cancelled_at=datetime.now(UTC),
        )
        u = _engine.TokenCore(is_cancelled=True)
        u.cancelled_at  # noqa: B018
        seen: list[Any] = []
        t._add_hook(seen.append)
        CancellationToken().id  # noqa: B018

    guarded(at, op)


# -- registry, module ------------------------------------------------------------------------


@scenario
def registry_table(at: Attempt) -> None:
    def op() -> None:
        table = _engine.RegistryTable()
        for i in range(5):
            table[f"k{i}"] = i
        table.values()
        table.pop("k1")
        table.get("k2", None)
        table.discard("k3", 3)
        table.clear()
        repr(table)

    guarded(at, op)


@scenario
def error_reporting(at: Attempt) -> None:
    """The engine's error report calling the Python handler."""

    seen: list[str] = []

    def handler(where: str, exc: BaseException) -> None:
        seen.append(where)

    _engine._set_error_handler(handler)
    kind, _ = guarded(at, _engine._report_error, "swept", ValueError("reported"))
    _engine._set_error_handler(_report)
    if kind == OK and seen != ["swept"]:
        at.failed = True  # the handler call failed: written to sys.unraisablehook instead


# -- driver -------------------------------------------------------------------------------


def run_attempt(name: str, n: int) -> dict[str, Any]:
    global _current
    sys.unraisablehook = lambda unraisable: None  # a handler failing under the sweep: silent
    at = Attempt(n)
    _current = at
    _engine._set_error_handler(_report)
    gc.collect()
    gc.disable()
    try:
        SCENARIOS[name](at)
    except BaseException as exc:  # the scenario's own code failed after the window
        at.problem("scenario: " + "".join(traceback.format_exception(exc))[-1500:])
    finally:
        _testcapi.remove_mem_hooks()
    gc.enable()
    gc.collect()
    real = [r for r in at.reported if r[1] != "MemoryError"]
    at.check(not real, f"non-memory errors reported: {real}")
    verdict = "problem" if at.problems else ("memory" if at.failed else "ok")
    return {"n": n, "verdict": verdict, "problems": at.problems}


def sweep(name: str, stride: int) -> dict[str, Any]:
    verdicts = {"ok": 0, "memory": 0, "problem": 0, "crash": 0, "hang": 0}
    problems: list[str] = []
    streak = 0
    n = 0
    while n < MAX_INDEX and streak < STOP_AFTER_OK:
        r, w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child
            os.close(r)
            signal.alarm(ATTEMPT_TIMEOUT)  # a hung attempt dies of SIGALRM
            try:
                result = run_attempt(name, n)
            except BaseException as exc:
                result = {"n": n, "verdict": "problem", "problems": [repr(exc)]}
            os.write(w, json.dumps(result).encode())
            os.close(w)
            LIBC.exit(0)
        os.close(w)
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM:
            verdict = "hang"
            problems.append(f"n={n}: [hang] the attempt did not finish in {ATTEMPT_TIMEOUT} s")
        elif os.WIFSIGNALED(status) or not chunks:
            verdict = "crash"
            problems.append(f"n={n}: [crash] child died (status {status})")
        else:
            result = json.loads(b"".join(chunks))
            verdict = result["verdict"]
            problems.extend(f"n={n}: {p}" for p in result["problems"])
        verdicts[verdict] += 1
        streak = streak + 1 if verdict == "ok" else 0
        n += stride
    return {"scenario": name, "last_index": n, "verdicts": verdicts, "problems": problems[:20]}


def main() -> None:
    mode, *names = sys.argv[1:]
    if mode == "one":  # debugging: one attempt, in this process
        print(json.dumps(run_attempt(names[0], int(names[1])), indent=1))
        return
    stride = 1 if mode == "full" else 5
    for name in names or list(SCENARIOS):
        print(json.dumps(sweep(name, stride)), flush=True)


if __name__ == "__main__":
    main()
