"""Parity: the same cancel-scope programs on four implementations, compared trace by trace.

Implementations (``IMPLS``):

* ``engine``: ``hother.cancelable._engine.CancelScope`` on asyncio (the asyncio backend);
* ``engine-uvloop``: the same on uvloop;
* ``anyio``: ``anyio.CancelScope`` on asyncio (the anyio backend);
* ``trio``: ``trio.CancelScope`` under ``trio.run`` — the reference semantics.

A scenario is plain data: a tuple of operations, interpreted by :func:`run_ops`. That keeps
the scenarios small and lets a property-based generator (hypothesis) produce them later:
:data:`OPS` documents the operation set.

Trace entries: ``("cp", label, "ok"|"cancelled")`` for each checkpoint, ``("exit", name,
escaped, cancel_called, cancelled_caught)`` when a scope's ``with`` block ends (``escaped``
is ``"none"``, ``"cancelled"`` or ``"KeyError"``), ``("flags", name, cancel_called,
cancelled_caught)``, ``("escaped", ...)`` if something left the whole program, and
``("final", ...)`` for one extra checkpoint after it (detects leaked cancellations).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hother.cancelable.pytest_plugin import run_in_mode

#: The operation set (first element of each op tuple):
#:
#: ``("scope", name, options, body)``: ``with`` a new scope; options: ``deadline`` (seconds
#: from now; negative = past), ``shield`` (bool), ``cancel_before`` (cancel before entering);
#: ``("cp", label)``: ``await sleep(0)``, a cancellation propagates;
#: ``("cp_catch", label)``: the same, but a cancellation is caught and execution continues;
#: ``("sleep", label, seconds)``: ``await sleep(seconds)``, a cancellation propagates;
#: ``("cancel", name)``; ``("set_deadline", name, seconds_from_now)`` (``math.inf`` allowed);
#: ``("set_shield", name, bool)``; ``("raise", label)``: ``raise KeyError(label)``;
#: ``("flags", name)``: record the scope's ``cancel_called`` / ``cancelled_caught``.
OPS = ("scope", "cp", "cp_catch", "sleep", "cancel", "set_deadline", "set_shield", "raise", "flags")

Op = tuple[Any, ...]
Trace = list[tuple[Any, ...]]


@dataclass
class Env:
    """What the interpreter needs from one implementation (built inside its event loop)."""

    make_scope: Callable[[float, bool], Any]
    sleep: Callable[[float], Coroutine[Any, Any, Any]]
    now: Callable[[], float]
    cancelled: type[BaseException]
    scopes: dict[str, Any] = field(default_factory=dict)
    #: trio only notices a deadline moved into the past at the next checkpoint (or when
    #: ``cancel_called`` is read while the scope is active); anyio and the engine cancel at
    #: once. Reading the flag right after the move removes that laziness from the comparison
    #: without changing what the program observes (the next checkpoint raises either way).
    eager_deadline_check: bool = False


def _scope_options(env: Env, options: dict[str, Any]) -> tuple[float, bool]:
    rel = options.get("deadline")
    deadline = math.inf if rel is None else env.now() + rel
    return deadline, bool(options.get("shield", False))


async def run_ops(ops: tuple[Op, ...], env: Env, trace: Trace) -> None:
    """Interpret ``ops`` (see :data:`OPS`), appending to ``trace``."""
    for op in ops:
        kind = op[0]
        if kind == "scope":
            _, name, options, body = op
            scope = env.make_scope(*_scope_options(env, options))
            if options.get("cancel_before"):
                scope.cancel()
            env.scopes[name] = scope
            escaped = "none"
            try:
                with scope:
                    await run_ops(body, env, trace)
            except env.cancelled:
                escaped = "cancelled"
                raise
            except KeyError:
                escaped = "KeyError"
                raise
            finally:
                trace.append(("exit", name, escaped, scope.cancel_called, scope.cancelled_caught))
        elif kind in ("cp", "cp_catch", "sleep"):
            label = op[1]
            try:
                await env.sleep(op[2] if kind == "sleep" else 0)
            except env.cancelled:
                trace.append(("cp", label, "cancelled"))
                if kind != "cp_catch":
                    raise
            else:
                trace.append(("cp", label, "ok"))
        elif kind == "cancel":
            env.scopes[op[1]].cancel()
        elif kind == "set_deadline":
            scope = env.scopes[op[1]]
            scope.deadline = env.now() + op[2]
            if env.eager_deadline_check:
                _ = scope.cancel_called
        elif kind == "set_shield":
            env.scopes[op[1]].shield = op[2]
        elif kind == "raise":
            raise KeyError(op[1])
        elif kind == "flags":
            scope = env.scopes[op[1]]
            trace.append(("flags", op[1], scope.cancel_called, scope.cancelled_caught))
        else:  # pragma: no cover - a malformed scenario
            raise ValueError(f"unknown op {kind!r}")


async def run_program(ops: tuple[Op, ...], env: Env) -> Trace:
    """Run a whole program and the final leak-detecting checkpoint."""
    trace: Trace = []
    try:
        await run_ops(ops, env, trace)
    except env.cancelled:
        trace.append(("escaped", "cancelled"))
    except KeyError:
        trace.append(("escaped", "KeyError"))
    try:
        await env.sleep(0)
    except env.cancelled:
        trace.append(("final", "cancelled"))
    else:
        trace.append(("final", "ok"))
    return trace


# -- implementations -------------------------------------------------------------------------


async def _engine_program(ops: tuple[Op, ...]) -> Trace:
    from hother.cancelable import _engine

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    before = task.cancelling()
    env = Env(
        make_scope=lambda d, s: _engine.CancelScope(deadline=d, shield=s),
        sleep=asyncio.sleep,
        now=loop.time,
        cancelled=asyncio.CancelledError,
    )
    trace = await run_program(ops, env)
    assert task.cancelling() == before, "Task.cancelling() was not restored"
    return trace


async def _anyio_program(ops: tuple[Op, ...]) -> Trace:
    import anyio

    env = Env(
        make_scope=lambda d, s: anyio.CancelScope(deadline=d, shield=s),
        sleep=anyio.sleep,
        now=anyio.current_time,
        cancelled=anyio.get_cancelled_exc_class(),
    )
    return await run_program(ops, env)


async def _trio_program(ops: tuple[Op, ...]) -> Trace:
    import trio

    env = Env(
        make_scope=lambda d, s: trio.CancelScope(deadline=d, shield=s),
        sleep=trio.sleep,
        now=trio.current_time,
        cancelled=trio.Cancelled,
        eager_deadline_check=True,
    )
    return await run_program(ops, env)


IMPLS: dict[str, tuple[str, Callable[..., Coroutine[Any, Any, Trace]]]] = {
    "engine": ("asyncio", _engine_program),
    "engine-uvloop": ("uvloop", _engine_program),
    "anyio": ("asyncio", _anyio_program),
    "trio": ("trio", _trio_program),
}


def trace_of(impl: str, ops: tuple[Op, ...]) -> Trace:
    """Run ``ops`` on implementation ``impl`` in a fresh event loop."""
    mode, program = IMPLS[impl]
    result: Trace = run_in_mode(mode, program, ops=ops)
    return result


# -- scenarios -------------------------------------------------------------------------------

S: dict[str, tuple[Op, ...]] = {
    "cancel-then-checkpoint": (("scope", "A", {}, (("cancel", "A"), ("cp", "c1"), ("cp", "c2"))),),
    "cancel-without-checkpoint": (("scope", "A", {}, (("cancel", "A"), ("flags", "A"))),),
    "no-cancel": (("scope", "A", {}, (("cp", "c1"),)),),
    "level-triggered": (
        ("scope", "A", {}, (("cancel", "A"), ("cp_catch", "c1"), ("cp_catch", "c2"), ("cp", "c3"))),
    ),
    "caught-then-exit-normally": (("scope", "A", {}, (("cancel", "A"), ("cp_catch", "c1"))),),
    "nested-outer-cancel-reaches-inner": (
        ("scope", "A", {}, (("scope", "B", {}, (("cancel", "A"), ("cp", "c1"))), ("cp", "c2"))),
    ),
    "inner-cancel-stays-inner": (
        ("scope", "A", {}, (("scope", "B", {}, (("cancel", "B"), ("cp", "c1"))), ("cp", "c2"))),
    ),
    "both-cancelled-outer-catches": (
        ("scope", "A", {}, (("scope", "B", {}, (("cancel", "B"), ("cancel", "A"), ("cp", "c1"))),)),
    ),
    "both-cancelled-inner-first-then-outer": (
        (
            "scope",
            "A",
            {},
            (
                (
                    "scope",
                    "B",
                    {},
                    (("cancel", "B"), ("cp_catch", "c1"), ("cancel", "A"), ("cp", "c2")),
                ),
            ),
        ),
    ),
    "shield-blocks-outer": (
        (
            "scope",
            "A",
            {},
            (("cancel", "A"), ("scope", "B", {"shield": True}, (("cp", "c1"),)), ("cp", "c2")),
        ),
    ),
    "shielded-inner-cancelled-itself": (
        (
            "scope",
            "A",
            {},
            (("scope", "B", {"shield": True}, (("cancel", "A"), ("cancel", "B"), ("cp", "c1"))),),
        ),
    ),
    "shield-toggled-off": (
        (
            "scope",
            "A",
            {},
            (
                (
                    "scope",
                    "B",
                    {"shield": True},
                    (("cancel", "A"), ("cp", "c1"), ("set_shield", "B", False), ("cp", "c2")),
                ),
            ),
        ),
    ),
    "shield-toggled-on": (
        (
            "scope",
            "A",
            {},
            (
                ("scope", "B", {}, (("set_shield", "B", True), ("cancel", "A"), ("cp", "c1"))),
                ("cp", "c2"),
            ),
        ),
    ),
    "cancel-in-shielded-nested": (
        ("scope", "A", {"shield": True}, (("scope", "B", {}, (("cancel", "A"), ("cp", "c1"))),)),
    ),
    "deadline-expiry": (("scope", "A", {"deadline": 0.01}, (("sleep", "s1", 10.0),)),),
    "past-deadline": (("scope", "A", {"deadline": -1.0}, (("cp", "c1"),)),),
    "past-deadline-no-checkpoint": (("scope", "A", {"deadline": -1.0}, (("flags", "A"),)),),
    "deadline-set-inside-to-past": (
        ("scope", "A", {}, (("cp", "c0"), ("set_deadline", "A", -1.0), ("cp", "c1"))),
    ),
    "deadline-set-inside-expires": (
        ("scope", "A", {}, (("set_deadline", "A", 0.01), ("sleep", "s1", 10.0))),
    ),
    "deadline-removed": (
        (
            "scope",
            "A",
            {"deadline": 0.01},
            (("set_deadline", "A", math.inf), ("sleep", "s1", 0.03)),
        ),
    ),
    "outer-deadline-while-inner-shielded": (
        (
            "scope",
            "A",
            {"deadline": 0.01},
            (("scope", "B", {"shield": True}, (("sleep", "s1", 0.04),)), ("cp", "c2")),
        ),
    ),
    "inner-deadline-outer-untouched": (
        (
            "scope",
            "A",
            {},
            (("scope", "B", {"deadline": 0.01}, (("sleep", "s1", 10.0),)), ("cp", "c2")),
        ),
    ),
    "cancel-before-enter": (("scope", "A", {"cancel_before": True}, (("cp", "c1"),)),),
    "error-passes-through-cancelled-scope": (
        ("scope", "A", {}, (("cancel", "A"), ("raise", "boom"))),
    ),
    "error-after-caught-cancel": (
        ("scope", "A", {}, (("cancel", "A"), ("cp_catch", "c1"), ("raise", "boom"))),
    ),
    "sequential-scopes": (
        ("scope", "A", {}, (("cancel", "A"), ("cp", "c1"))),
        ("cp", "between"),
        ("scope", "B", {"deadline": -1.0}, (("cp", "c2"),)),
        ("scope", "C", {}, (("cp", "c3"),)),
    ),
    "three-levels-middle-cancelled": (
        (
            "scope",
            "A",
            {},
            (
                (
                    "scope",
                    "B",
                    {},
                    (("scope", "C", {}, (("cancel", "B"), ("cp", "c1"))), ("cp", "c2")),
                ),
                ("cp", "c3"),
            ),
        ),
    ),
    "cancel-after-exit-is-harmless": (
        ("scope", "A", {}, (("cp", "c1"),)),
        ("cancel", "A"),
        ("flags", "A"),
        ("cp", "c2"),
    ),
}


@pytest.mark.parametrize("name", sorted(S))
def test_parity_with_trio(name: str) -> None:
    ops = S[name]
    reference = trace_of("trio", ops)
    assert reference[-1][0] == "final"
    traces = {impl: trace_of(impl, ops) for impl in IMPLS if impl != "trio"}
    for impl, trace in traces.items():
        assert trace == reference, f"{impl} differs from trio on {name!r}"


def test_interpreter_sanity() -> None:
    """The interpreter really exercises cancellation (guards against a vacuous parity)."""
    assert trace_of("trio", S["cancel-then-checkpoint"]) == [
        ("cp", "c1", "cancelled"),
        ("exit", "A", "none", True, True),
        ("final", "ok"),
    ]
    assert trace_of("engine", S["nested-outer-cancel-reaches-inner"]) == [
        ("cp", "c1", "cancelled"),
        ("exit", "B", "cancelled", False, False),
        ("exit", "A", "none", True, True),
        ("final", "ok"),
    ]
    assert trace_of("engine", S["level-triggered"])[:3] == [
        ("cp", "c1", "cancelled"),
        ("cp", "c2", "cancelled"),
        ("cp", "c3", "cancelled"),
    ]


# -- generated programs (hypothesis) ---------------------------------------------------------
#
# Random programs over the timing-free part of the op set (deadlines only ever "past" or
# "none"), so traces are deterministic. Scope references are drawn as indices into the stack
# of enclosing scopes and resolved to names by `materialize`.

_ref = st.integers(min_value=0, max_value=3)
_leaf = st.one_of(
    st.just(("cp",)),
    st.just(("cp_catch",)),
    st.tuples(st.just("cancel"), _ref),
    st.tuples(st.just("set_shield"), _ref, st.booleans()),
    st.tuples(st.just("set_deadline"), _ref, st.sampled_from([-1.0, math.inf])),
    st.tuples(st.just("flags"), _ref),
    st.just(("raise",)),
)
_options = st.fixed_dictionaries(
    {},
    optional={
        "shield": st.booleans(),
        "cancel_before": st.booleans(),
        "deadline": st.just(-1.0),
    },
)


def _scope_of(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.tuples(st.just("scope"), _options, st.lists(children, max_size=4).map(tuple))


_raw_program = st.lists(st.recursive(_leaf, _scope_of, max_leaves=10), min_size=1, max_size=3)


def materialize(raw: list[Any]) -> tuple[Op, ...]:
    """Give scopes names and checkpoints labels; resolve scope indices against the stack."""
    counter = {"scope": 0, "label": 0}

    def convert(ops: Any, stack: list[str]) -> tuple[Op, ...]:
        out: list[Op] = []
        for op in ops:
            kind = op[0]
            if kind == "scope":
                name = f"S{counter['scope']}"
                counter["scope"] += 1
                out.append(("scope", name, op[1], convert(op[2], [*stack, name])))
            elif kind in ("cp", "cp_catch", "raise"):
                counter["label"] += 1
                out.append((kind, f"L{counter['label']}"))
            elif stack:
                out.append((kind, stack[op[1] % len(stack)], *op[2:]))
        return tuple(out)

    return convert(raw, [])


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(_raw_program)
def test_generated_programs_match_trio(raw: list[Any]) -> None:
    ops = materialize(raw)
    reference = trace_of("trio", ops)
    assert trace_of("engine", ops) == reference, ops
    assert trace_of("anyio", ops) == reference, ops
