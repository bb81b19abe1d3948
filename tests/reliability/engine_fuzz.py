"""Hypothesis fuzzer of every C entry point of ``hother.cancelable._engine``.

Run as a script (in a subprocess, so that a crash of the interpreter is seen as a failure
by the test that starts it, not as a dead test run)::

    python -m reliability.engine_fuzz --examples 300 --seed 0        # from tests/

Each example runs a random program of 1-40 steps on a pool of engine objects
(``CancelScope``, ``TokenCore``, ``RegistryTable``, ``CancellableCore`` and the awaitables
its ``__aenter__``/``__aexit__`` return), either with no event loop, inside an asyncio or
uvloop task, or inside trio. A step calls a constructor, a method, a module function, or
sets/reads/deletes an attribute (private members included), with arguments drawn from a
pool of hostile values: wrong types, None, NaN/inf/huge numbers, surrogate strings, objects
whose dunders raise, closed loops, finished tasks, dead weak references, engine objects of
the wrong kind... Some steps run in another thread.

Every exception raised by a step is accepted except ``SystemError`` (a C function returned
an error without setting one, or the C API was misused): the interpreter must not crash, and
the engine must never raise ``SystemError``. Exit status 0 when all examples pass.

``--trace`` prints every step before running it (for reproducing a crash: the run is
deterministic for a given ``--seed``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import enum
import gc
import math
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from hother.cancelable import Cancellable, CancellationReason, _engine
from hother.cancelable.core.token import CancellationToken

TRACE = False
#: Exploration aid: skip the surfaces of the defects already reported (see docs/errors.md).
AVOID_KNOWN = False
KNOWN_UNSAFE_MEMBERS = ("_token_obj", "_scope")


# ------------------------------------------------------------------------- hostile values


class Raiser:
    """Every dunder a C function may call raises."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("__eq__")

    def __hash__(self) -> int:
        raise RuntimeError("__hash__")

    def __bool__(self) -> bool:
        raise RuntimeError("__bool__")

    def __float__(self) -> float:
        raise RuntimeError("__float__")

    def __index__(self) -> int:
        raise RuntimeError("__index__")

    def __str__(self) -> str:
        raise RuntimeError("__str__")

    def __repr__(self) -> str:
        return "<Raiser>"

    def __call__(self, *args: Any) -> Any:
        raise RuntimeError("__call__")

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"getattr {name}")


class FloatLike:
    """Converts to NaN."""

    def __float__(self) -> float:
        return math.nan


class FakeExecutor:
    """Looks like an event loop / trio token; its scheduling methods raise or misbehave."""

    def call_soon_threadsafe(self, *args: Any) -> Any:
        raise RuntimeError("loop is closed")

    def run_sync_soon(self, *args: Any) -> Any:
        return 42


class Color(enum.Enum):
    RED = 1


class BadExc(Exception):
    """An exception whose str() raises."""

    def __str__(self) -> str:
        raise RuntimeError("BadExc.__str__")


async def _coro_fn() -> None:
    return None


def _closed_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.close()
    return loop


class _Dead:
    pass


def _dead_ref() -> Any:
    obj = _Dead()
    ref = weakref.ref(obj)
    del obj
    return ref


def _finished_task() -> Any:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    task = loop.create_task(_coro_fn())
    task.cancel()
    return task


def _current_task() -> Any:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def _running_loop() -> Any:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _coroutine() -> Any:
    coro = _coro_fn()
    coro.close()
    return coro


def _raising_hook(_arg: Any) -> None:
    raise ValueError("hook raised")


def _awaitable_hook(_arg: Any) -> Any:
    return _coro_fn()


def _gen_awaitable_hook(_arg: Any) -> Any:
    return asyncio.sleep(0)


FACTORIES: dict[str, Callable[[], Any]] = {
    "object": object,
    "raiser": Raiser,
    "float_like": FloatLike,
    "fake_executor": FakeExecutor,
    "enum": lambda: Color.RED,
    "reason": lambda: CancellationReason.MANUAL,
    "reason_parent": lambda: CancellationReason.PARENT,
    "exc": lambda: ValueError("x"),
    "bad_exc": BadExc,
    "cancelled_error": asyncio.CancelledError,
    "exc_group": lambda: BaseExceptionGroup("g", [asyncio.CancelledError()]),
    "exc_class": lambda: ValueError,
    "type": lambda: int,
    "closed_loop": _closed_loop,
    "running_loop": _running_loop,
    "current_task": _current_task,
    "finished_task": _finished_task,
    "dead_ref": _dead_ref,
    "coroutine": _coroutine,
    "datetime": lambda: datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
    "naive_datetime": lambda: datetime.datetime(2020, 1, 1),
    "timedelta": lambda: datetime.timedelta(seconds=-1),
    "hook_raising": lambda: _raising_hook,
    "hook_async": lambda: _awaitable_hook,
    "hook_sleep": lambda: _gen_awaitable_hook,
    "lambda": lambda: lambda *a, **k: None,
    "module": lambda: _engine,
    "scope": _engine.CancelScope,
    "token": _engine.TokenCore,
    "py_token": CancellationToken,
    "table": _engine.RegistryTable,
    "core": _engine.CancellableCore,
    "cancellable": Cancellable,
    "dict": dict,
    "list": list,
    "tuple2": lambda: (CancellationReason.MANUAL, "m"),
    "tuple_bad": lambda: (1, 2, 3),
}

primitives = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**63 - 1, -(2**63), 2**64, 10**400, -(10**400)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324]),
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=12),
    st.sampled_from(["", "\x00", "a\x00b", "\ud800", "x" * 1000]),
    st.binary(max_size=8),
)


def value(data: Any, pool: dict[str, list[Any]]) -> Any:
    """One hostile value: a primitive, a fresh special object, or an engine object of the
    pool (so that objects of one kind are passed where another kind is expected)."""
    kind = data.draw(st.integers(0, 9), label="value kind")
    if kind <= 3:
        return data.draw(primitives, label="primitive")
    if kind <= 6:
        name = data.draw(st.sampled_from(sorted(FACTORIES)), label="factory")
        try:
            return FACTORIES[name]()
        except BaseException:
            return None
    objects = [o for lst in pool.values() for o in lst]
    index = data.draw(st.integers(0, 1 << 16), label="pool object")
    return objects[index % len(objects)] if objects else None


def args_of(data: Any, pool: dict[str, list[Any]], max_n: int = 3) -> list[Any]:
    n = data.draw(st.integers(0, max_n), label="nargs")
    return [value(data, pool) for _ in range(n)]


def kwargs_of(data: Any, pool: dict[str, list[Any]], names: list[str]) -> dict[str, Any]:
    chosen = data.draw(st.lists(st.sampled_from([*names, "bogus"]), max_size=3, unique=True))
    return {k: value(data, pool) for k in chosen}


# ------------------------------------------------------------------------- the program

SCOPE_ATTRS = [
    "deadline",
    "shield",
    "cancel_called",
    "cancelled_caught",
    "deadline_reached",
    "active",
    "effectively_cancelled",
    "host_task",
]
TOKEN_ATTRS = ["id", "is_cancelled", "reason", "message", "cancelled_at", "_hook_count"]
CORE_MEMBERS = [
    "_id",
    "_ctx",
    "_status",
    "_cancel_reason",
    "_cancel_message",
    "_error",
    "_partial_result",
    "_token_obj",
    "_scope",
    "_backend",
    "_cv_token",
    "_parent_ref",
    "_parent_id",
    "_source_reason",
    "_hook_reason",
    "_source_error",
    "_hook",
    "_entered",
    "_registered",
    "_register_globally",
    "_fast",
    "_sources",
    "_shields",
    "_external_tokens",
    "_cancellables_to_link",
    "_linked_to",
    "_progress_callbacks",
    "_start_callbacks",
    "_complete_callbacks",
    "_cancel_callbacks",
    "_error_callbacks",
    "_children",
    "_metadata",
    "_name",
    "_start_time",
    "_end_time",
    "_token",
    "_fast_timeout",
]
MODULE_FUNCS = [
    "loop_stats",
    "current_scope",
    "adopt_task",
    "armed_timers",
    "capture_executor",
    "_run_hook",
    "_report_error",
    "live_objects",
    "current_operation",
]


class SystemErrorSeen(AssertionError):
    pass


def _call(desc: str, fn: Callable[[], Any]) -> Any:
    if TRACE:
        print("step:", desc, file=sys.stderr, flush=True)
    try:
        return fn()
    except SystemError as exc:
        raise SystemErrorSeen(f"{desc} raised SystemError: {exc}") from exc
    except BaseException:
        return None


def _pick(data: Any, pool: dict[str, list[Any]], kind: str) -> Any:
    # always one draw, whatever the pool holds: the draws must not depend on the outcome
    # of earlier calls (hypothesis requires a deterministic data generation)
    index = data.draw(st.integers(0, 1 << 16), label=kind)
    items = pool[kind]
    if not items:
        if kind not in FACTORIES:
            return None
        fresh = FACTORIES[kind]()
        if AVOID_KNOWN:
            items.append(fresh)  # never drop an object that may be entered
        return fresh
    return items[index % len(items)]


def step(data: Any, pool: dict[str, list[Any]], in_loop: bool) -> None:
    op = data.draw(st.integers(0, 27), label="op")

    def v() -> Any:
        return value(data, pool)

    if op == 0:
        kw = kwargs_of(data, pool, ["deadline", "shield"])
        s = _call(f"CancelScope(**{kw!r})", lambda: _engine.CancelScope(**kw))
        if s is not None:
            pool["scope"].append(s)
    elif op == 1:
        s = _pick(data, pool, "scope")
        name = data.draw(st.sampled_from(SCOPE_ATTRS))
        what = data.draw(st.integers(0, 2))
        x = v()
        if what == 0:
            _call(f"scope.{name}", lambda: getattr(s, name))
        elif what == 1:
            _call(f"scope.{name} = {x!r}", lambda: setattr(s, name, x))
        else:
            _call(f"del scope.{name}", lambda: delattr(s, name))
    elif op == 2:
        s = _pick(data, pool, "scope")
        a = args_of(data, pool, 2)
        _call(f"scope.cancel(*{a!r})", lambda: s.cancel(*a))
    elif op == 3:
        s = _pick(data, pool, "scope")
        _call("scope.__enter__()", lambda: s.__enter__())
    elif op == 4:
        s = _pick(data, pool, "scope")
        a = args_of(data, pool, 4)
        _call(f"scope.__exit__(*{a!r})", lambda: s.__exit__(*a))
    elif op == 5:
        a = args_of(data, pool, 1)
        kw = kwargs_of(data, pool, ["id", "is_cancelled", "reason", "message", "cancelled_at"])
        t = _call(f"TokenCore(*{a!r}, **{kw!r})", lambda: _engine.TokenCore(*a, **kw))
        if t is not None:
            pool["token"].append(t)
    elif op == 6:
        t = _pick(data, pool, "token")
        a = args_of(data, pool, 3)
        kw = kwargs_of(data, pool, ["reason", "message", "collect"])
        r = _call(f"token._cancel(*{a!r}, **{kw!r})", lambda: t._cancel(*a, **kw))
        if isinstance(r, tuple) and len(r) == 2 and isinstance(r[1], list):
            for aw in r[1]:
                close = getattr(aw, "close", None)
                if close is not None:
                    _call("close collected awaitable", close)
    elif op == 7:
        t = _pick(data, pool, "token")
        a = args_of(data, pool, 2)
        kw = kwargs_of(data, pool, ["fn", "executor"])
        _call(f"token._add_hook(*{a!r}, **{kw!r})", lambda: t._add_hook(*a, **kw))
    elif op == 8:
        t = _pick(data, pool, "token")
        x = v() if data.draw(st.booleans()) else data.draw(st.integers(-3, 40))
        _call(f"token._remove_hook({x!r})", lambda: t._remove_hook(x))
    elif op == 9:
        t = _pick(data, pool, "token")
        src = _pick(data, pool, "token") if data.draw(st.booleans()) else v()
        kw = kwargs_of(data, pool, ["preserve_reason"])
        which = data.draw(st.booleans())
        if which:
            _call(f"token._link_from({src!r}, **{kw!r})", lambda: t._link_from(src, **kw))
        else:
            _call(f"token._unlink_from({src!r})", lambda: t._unlink_from(src))
    elif op == 10:
        t = _pick(data, pool, "token")
        name = data.draw(st.sampled_from(TOKEN_ATTRS))
        x = v()
        if data.draw(st.booleans()):
            _call(f"token.{name}", lambda: getattr(t, name))
        else:
            _call(f"token.{name} = {x!r}", lambda: setattr(t, name, x))
    elif op == 11:
        tb = _pick(data, pool, "table")
        meth = data.draw(st.sampled_from(["set", "get", "pop", "discard", "values", "clear"]))
        a = args_of(data, pool, 3)
        _call(f"table.{meth}(*{a!r})", lambda: getattr(tb, meth)(*a))
    elif op == 12:
        tb = _pick(data, pool, "table")
        k, x = v(), v()
        how = data.draw(st.integers(0, 4))
        if how == 0:
            _call(f"table[{k!r}]", lambda: tb[k])
        elif how == 1:
            _call(f"table[{k!r}] = {x!r}", lambda: tb.__setitem__(k, x))
        elif how == 2:
            _call(f"del table[{k!r}]", lambda: tb.__delitem__(k))
        elif how == 3:
            _call(f"{k!r} in table", lambda: k in tb)
        else:
            _call("len(table), repr(table)", lambda: (len(tb), repr(tb)))
    elif op == 13:
        a = args_of(data, pool, 2)
        kw = kwargs_of(
            data, pool, ["operation_id", "name", "parent", "metadata", "register_globally"]
        )
        c = _call(f"CancellableCore(*{a!r}, **{kw!r})", lambda: _engine.CancellableCore(*a, **kw))
        if c is not None:
            pool["core"].append(c)
    elif op == 14:
        a = args_of(data, pool, 3)
        kw = kwargs_of(data, pool, ["timeout", "operation_id", "name", "parent"])
        cls = data.draw(st.sampled_from([_engine.CancellableCore, Cancellable]))
        c = _call(
            f"{cls.__name__}.with_timeout(*{a!r}, **{kw!r})", lambda: cls.with_timeout(*a, **kw)
        )
        if c is not None:
            pool["core"].append(c)
    elif op == 15:
        c = _pick(data, pool, "core")
        name = data.draw(st.sampled_from(CORE_MEMBERS))
        x = v()
        how = data.draw(st.integers(0, 2))
        if AVOID_KNOWN and name in KNOWN_UNSAFE_MEMBERS and how:
            return
        if how == 0:
            _call(f"core.{name}", lambda: getattr(c, name))
        elif how == 1:
            _call(f"core.{name} = {x!r}", lambda: setattr(c, name, x))
        else:
            _call(f"del core.{name}", lambda: delattr(c, name))
    elif op == 16:
        c = _pick(data, pool, "core")
        aw = _call("core.__aenter__()", lambda: c.__aenter__())
        if aw is not None:
            pool["awaitable"].append(aw)
    elif op == 17:
        c = _pick(data, pool, "core")
        a = args_of(data, pool, 4)
        aw = _call(f"core.__aexit__(*{a!r})", lambda: c.__aexit__(*a))
        if aw is not None:
            pool["awaitable"].append(aw)
    elif op == 18:
        index = data.draw(st.integers(0, 1 << 16))
        how = data.draw(st.sampled_from(["send", "throw", "close", "next", "await", "iter"]))
        x = v()
        a = args_of(data, pool, 3)
        if not pool["awaitable"]:
            return
        aw = pool["awaitable"][index % len(pool["awaitable"])]
        if how == "send":
            _call(f"awaitable.send({x!r})", lambda: aw.send(x))
        elif how == "throw":
            if AVOID_KNOWN and not (
                a
                and (
                    isinstance(a[0], BaseException)
                    or (isinstance(a[0], type) and issubclass(a[0], BaseException))
                )
            ):
                return
            _call(f"awaitable.throw(*{a!r})", lambda: aw.throw(*a))
        elif how == "close":
            _call("awaitable.close()", lambda: aw.close())
        elif how == "next":
            _call("next(awaitable)", lambda: next(aw))
        elif how == "await":
            _call("awaitable.__await__()", lambda: aw.__await__())
        else:
            _call("iter(awaitable)", lambda: iter(aw))
    elif op == 19:
        name = data.draw(st.sampled_from(MODULE_FUNCS))
        a = args_of(data, pool, 3)
        kw = kwargs_of(data, pool, ["loop", "task"])
        fn = getattr(_engine, name)
        _call(f"_engine.{name}(*{a!r}, **{kw!r})", lambda: fn(*a, **kw))
    elif op == 20:
        # threads: cancel a scope / a token / touch a table from another thread
        s = _pick(data, pool, "scope")
        t = _pick(data, pool, "token")
        tb = _pick(data, pool, "table")
        reason = v()

        def other() -> None:
            steps: tuple[Callable[[], Any], ...] = (
                lambda: s.cancel(),
                lambda: t._cancel(CancellationReason.MANUAL, "thread"),
                lambda: t._cancel(reason),
                lambda: tb.set("k", object()),
                lambda: tb.pop("k"),
                lambda: _engine.capture_executor(),
            )
            for fn in steps:
                try:
                    fn()
                except SystemError as exc:
                    errors.append(exc)
                except BaseException:
                    pass

        errors: list[BaseException] = []
        th = threading.Thread(target=other)
        if TRACE:
            print("step: thread cancel/table", file=sys.stderr, flush=True)
        th.start()
        th.join(10)
        if errors:
            raise SystemErrorSeen(f"thread step raised SystemError: {errors[0]}")
    elif op == 21:
        # the engine's loop objects reached through the gc (never handed out by the API)
        index = data.draw(st.integers(0, 1 << 16))
        meth = data.draw(st.sampled_from(["_on_timer", "_redeliver"]))
        engines = [o for o in gc.get_objects() if type(o) is _engine.LoopEngine]
        if engines:
            e = engines[index % len(engines)]
            _call(f"LoopEngine.{meth}()", lambda: getattr(e, meth)())
        _call("LoopEngine()", lambda: _engine.LoopEngine())
    elif op == 22:
        c = _pick(data, pool, "core")
        a = args_of(data, pool, 2)
        _call(f"core.__init__(*{a!r})", lambda: c.__init__(*a))
    elif op == 23:
        t = _pick(data, pool, "token")
        kw = kwargs_of(data, pool, ["id", "is_cancelled", "reason", "message", "cancelled_at"])
        _call(f"token.__init__(**{kw!r})", lambda: t.__init__(**kw))
    elif op == 24:
        s = _pick(data, pool, "scope")
        a = args_of(data, pool, 2)
        _call(f"CancelScope.__init__/__new__(*{a!r})", lambda: type(s).__new__(type(s), *a))
    elif op == 25:
        _call("gc.collect()", gc.collect)
    elif op == 26:
        kind = data.draw(st.sampled_from(["scope", "token", "core", "table", "awaitable"]))
        index = data.draw(st.integers(0, 1 << 16))
        if pool[kind] and not AVOID_KNOWN:
            i = index % len(pool[kind])
            if TRACE:
                print(f"step: drop {kind}[{i}]", file=sys.stderr, flush=True)
            del pool[kind][i]
    else:
        c = _pick(data, pool, "core")
        name = data.draw(st.sampled_from(["_on_token_cancelled", "_aenter_slow", "_aexit_slow"]))
        a = args_of(data, pool, 3)
        _call(f"core.{name}(*{a!r})", lambda: getattr(c, name)(*a))


def _new_pool() -> dict[str, list[Any]]:
    return {"scope": [], "token": [], "table": [], "core": [], "awaitable": []}


async def _async_program(data: Any, n: int, checkpoint: Callable[[], Any]) -> None:
    pool = _new_pool()
    for _ in range(n):
        step(data, pool, True)
        if data.draw(st.integers(0, 4), label="checkpoint") == 0:
            try:
                await checkpoint()
            except BaseException:
                pass
    # close awaitables so that nothing warns at shutdown
    for aw in pool["awaitable"]:
        close = getattr(aw, "close", None)
        if close is not None:
            try:
                close()
            except BaseException:
                pass


def _run_program(data: Any) -> None:
    runner = data.draw(st.sampled_from(["none", "asyncio", "uvloop", "trio"]), label="runner")
    n = data.draw(st.integers(1, 40), label="steps")
    if TRACE:
        print(f"--- example: runner={runner} steps={n}", file=sys.stderr, flush=True)
    if runner == "none":
        pool = _new_pool()
        for _ in range(n):
            step(data, pool, False)
        return
    if runner == "trio":
        import trio

        async def trio_main() -> None:
            await _async_program(data, n, trio.lowlevel.checkpoint)

        try:
            trio.run(trio_main)
        except SystemErrorSeen:
            raise
        except BaseException:
            pass
        return
    factory = None
    if runner == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop

    async def main() -> None:
        await _async_program(data, n, lambda: asyncio.sleep(0))

    try:
        with asyncio.Runner(loop_factory=factory) as r:
            r.run(main())
    except SystemErrorSeen:
        raise
    except BaseException:
        pass


def run(examples: int, seed_value: int) -> None:
    """Run the fuzzer (raises on a ``SystemError``)."""

    @seed(seed_value)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(st.data())
    def fuzz(data: Any) -> None:
        _run_program(data)

    fuzz()


def main(argv: list[str] | None = None) -> int:
    global TRACE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--avoid-known", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    TRACE = args.trace
    global AVOID_KNOWN
    AVOID_KNOWN = args.avoid_known
    import faulthandler

    faulthandler.enable()
    run(args.examples, args.seed)
    gc.collect()
    print(f"engine fuzz: {args.examples} examples, seed {args.seed}: no crash, no SystemError")
    print(f"live C instances at exit: {_engine.live_objects()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
