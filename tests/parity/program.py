"""The program model of the parity fuzzer, its rendering and its hypothesis strategy.

A program is plain data (:class:`Program`): the ops of the main task, plus the schedule of an
outside *canceller* (cancels from another task or from a plain thread at given ticks).

Ops (tuples, first element is the kind)::

    ("scope", name, opts, body)      with CancelScope(deadline, shield): body
                                     opts: deadline ("past" | "now" | ticks from now),
                                     shield (bool), cancel_before (cancel() before entering)
    ("cp", label)                    await checkpoint() -- a cancellation propagates
    ("cp_catch", label)              try: await checkpoint() except Cancelled: continue
    ("sleep", label, n)              await sleep n ticks (a cancellation propagates)
    ("cancel", name)                 scope.cancel() (own scope, own group, or the group of
                                     the task itself)
    ("set_deadline", name, value)    scope.deadline = value ("past" | "now" | "inf" | ticks)
    ("set_shield", name, bool)       scope.shield = bool
    ("flags", name)                  record scope.cancel_called / cancelled_caught
    ("raise", label)                 raise KeyError(label)
    ("try", label, body, final)      try: body finally: final
    ("catch", label, body)           try: body except* KeyError: record and continue
    ("group", name, body)            async with task group (its cancel scope is `name`)
    ("spawn", task, body)            group.start_soon(task body) in the innermost own group

Determinism by construction (trio shuffles runnable tasks, asyncio runs them FIFO):

* virtual time; every task has its own *phase* (task k runs at ``tick + k/32``), every
  sleep ends on the task's phase, the canceller acts at ``tick + 31/64`` and scope ``j``'s
  deadlines fall at ``tick + 1/2 + (j + 1/2)/64``: no two independent events share an instant;
* tasks running at the same instant were all woken by the same cancelled scope ``X``; they
  may only cancel scopes that lie inside ``X`` already (their own scopes, their group), and
  only read the flags of their own plain scopes -- which nothing else changes.

The canceller's actions use distinct ticks; a thread cancel starts a plain thread and joins
it before the canceller continues.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

Op = tuple[Any, ...]
Action = tuple[int, str, str]  # (tick, "task" | "thread", scope name)

MAX_TASKS = 6  # child tasks per program (phases k/32, k < 16)
CANCELLER_PHASE = 31 / 64


def task_phase(index: int) -> float:
    """The fraction of a tick at which task ``index`` (0 = main) runs."""
    return index / 32


def deadline_fraction(scope_index: int) -> float:
    """The fraction of a tick at which the deadlines of scope ``scope_index`` fall."""
    return 0.5 + (scope_index % 31 + 0.5) / 64


def index_of(name: str) -> int:
    """``"S3"`` -> 3, ``"T2"`` -> 2."""
    return int(name[1:])


@dataclass(frozen=True)
class Program:
    """A generated program: the main task's ops and the canceller's schedule."""

    main: tuple[Op, ...]
    actions: tuple[Action, ...] = ()

    def __repr__(self) -> str:
        return "\n" + render(self)


# -- rendering ----------------------------------------------------------------------------------


def _fmt_deadline(value: Any) -> str:
    if value in ("inf", "past", "now"):
        return str(value)
    return f"+{value}"


def _render_ops(ops: tuple[Op, ...], indent: int) -> Iterator[str]:
    pad = "    " * indent
    if not ops:
        yield f"{pad}pass"
        return
    for op in ops:
        kind = op[0]
        if kind == "scope":
            _, name, opts, body = op
            args = []
            if "deadline" in opts:
                args.append(f"deadline={_fmt_deadline(opts['deadline'])}")
            if opts.get("shield"):
                args.append("shield=True")
            if opts.get("cancel_before"):
                yield f"{pad}{name} = CancelScope({', '.join(args)}); {name}.cancel()"
                yield f"{pad}with {name}:"
            else:
                yield f"{pad}with CancelScope({', '.join(args)}) as {name}:"
            yield from _render_ops(body, indent + 1)
        elif kind == "cp":
            yield f"{pad}await checkpoint()  # {op[1]}"
        elif kind == "cp_catch":
            yield f"{pad}try: await checkpoint()  # {op[1]}"
            yield f"{pad}except Cancelled: pass"
        elif kind == "sleep":
            yield f"{pad}await sleep({op[2]})  # {op[1]}"
        elif kind == "cancel":
            yield f"{pad}{op[1]}.cancel()"
        elif kind == "set_deadline":
            yield f"{pad}{op[1]}.deadline = {_fmt_deadline(op[2])}"
        elif kind == "set_shield":
            yield f"{pad}{op[1]}.shield = {op[2]}"
        elif kind == "flags":
            yield f"{pad}record({op[1]}.cancel_called, {op[1]}.cancelled_caught)"
        elif kind == "raise":
            yield f"{pad}raise KeyError({op[1]!r})"
        elif kind == "try":
            yield f"{pad}try:  # {op[1]}"
            yield from _render_ops(op[2], indent + 1)
            yield f"{pad}finally:"
            yield from _render_ops(op[3], indent + 1)
        elif kind == "catch":
            yield f"{pad}try:  # {op[1]}"
            yield from _render_ops(op[2], indent + 1)
            yield f"{pad}except* KeyError: pass"
        elif kind == "group":
            yield f"{pad}async with create_task_group() as {op[1]}:"
            yield from _render_ops(op[2], indent + 1)
        elif kind == "spawn":
            yield f"{pad}start_soon({op[1]}):  # child task"
            yield from _render_ops(op[2], indent + 1)
        else:  # pragma: no cover - a malformed program
            yield f"{pad}<unknown op {op!r}>"


def render(program: Program) -> str:
    """A readable, Python-like rendering of ``program`` (printed on a divergence)."""
    lines = ["async def main():", *_render_ops(program.main, 1)]
    for tick, how, target in program.actions:
        where = "from a plain thread" if how == "thread" else "from another task"
        lines.append(f"# at t={tick}+{CANCELLER_PHASE}: {target}.cancel() {where}")
    lines.append("# deadlines '+n' are n ticks from the enclosing tick; 'sleep(n)': n ticks")
    return "\n".join(lines)


def walk(ops: tuple[Op, ...]) -> Iterator[Op]:
    """Every op of ``ops``, nested ones included (pre-order)."""
    for op in ops:
        yield op
        kind = op[0]
        if kind in ("scope",):
            yield from walk(op[3])
        elif kind in ("catch", "group", "spawn"):
            yield from walk(op[2])
        elif kind == "try":
            yield from walk(op[2])
            yield from walk(op[3])


# -- generation ---------------------------------------------------------------------------------


@dataclass
class _TaskState:
    """What one task of the program being generated may refer to."""

    plain: list[str] = field(default_factory=list)  # own plain scopes, innermost last
    groups: list[str] = field(default_factory=list)  # own task groups, innermost last
    parent_group: str | None = None  # the group this (child) task runs in
    #: own plain scopes with no own task group open inside them: only these may be shielded
    #: (shielding a scope around a group could hide a cancel from children woken at the
    #: same instant -- a race -- while cancelling is monotonic and therefore safe)
    shieldable: list[str] = field(default_factory=list)


@dataclass
class _GenState:
    budget: int
    max_depth: int
    scopes: int = 0
    groups: int = 0
    tasks: int = 0
    labels: int = 0
    all_scopes: list[str] = field(default_factory=list)

    def label(self) -> str:
        self.labels += 1
        return f"L{self.labels}"


_KINDS = (
    "cp",
    "cp",
    "cp_catch",
    "cp_catch",
    "sleep",
    "sleep",
    "scope",
    "scope",
    "scope",
    "cancel",
    "cancel",
    "set_deadline",
    "set_shield",
    "flags",
    "raise",
    "try",
    "catch",
    "group",
    "spawn",
    "spawn",
)
_DEADLINES: tuple[Any, ...] = ("past", "now", 1, 2, 3)
_NEW_DEADLINES: tuple[Any, ...] = ("past", "now", "inf", 1, 2)


def _block(
    draw: Any, g: _GenState, t: _TaskState, depth: int, first: Op | None = None
) -> tuple[Op, ...]:
    ops: list[Op] = [] if first is None else [first]
    length = draw(st.integers(1 if depth == 0 else 0, 5 if depth < g.max_depth else 2))
    for _ in range(length):
        if g.budget <= 0:
            break
        g.budget -= 1
        op = _op(draw, g, t, depth)
        if op is not None:
            ops.append(op)
    return tuple(ops)


def _op(draw: Any, g: _GenState, t: _TaskState, depth: int) -> Op | None:
    kind = draw(st.sampled_from(_KINDS))
    nested = depth < g.max_depth
    cancel_targets = [*t.plain, *t.groups] + ([t.parent_group] if t.parent_group else [])
    if kind == "cp":
        return ("cp", g.label())
    if kind == "cp_catch":
        return ("cp_catch", g.label())
    if kind == "sleep":
        return ("sleep", g.label(), draw(st.integers(1, 3)))
    if kind == "raise":
        return ("raise", g.label())
    if kind == "cancel":
        if not cancel_targets:
            return ("cp", g.label())
        return ("cancel", draw(st.sampled_from(cancel_targets)))
    if kind in ("set_deadline", "set_shield", "flags"):
        if not t.plain:
            return ("cp", g.label())
        target = draw(st.sampled_from(t.plain))
        if kind == "set_deadline":
            return ("set_deadline", target, draw(st.sampled_from(_NEW_DEADLINES)))
        if kind == "set_shield":
            value = draw(st.booleans())
            if value and target not in t.shieldable:
                value = False
            return ("set_shield", target, value)
        return ("flags", target)
    if not nested:
        return ("cp", g.label())
    if kind == "scope":
        name = f"S{g.scopes}"
        g.scopes += 1
        g.all_scopes.append(name)
        opts: dict[str, Any] = {}
        if draw(st.integers(0, 2)) == 0:
            opts["deadline"] = draw(st.sampled_from(_DEADLINES))
        if draw(st.integers(0, 3)) == 0:
            opts["shield"] = True
        if draw(st.integers(0, 5)) == 0:
            opts["cancel_before"] = True
        t.plain.append(name)
        t.shieldable.append(name)
        body = _block(draw, g, t, depth + 1)
        t.shieldable.pop()
        t.plain.pop()
        return ("scope", name, opts, body)
    if kind == "try":
        label = g.label()
        body = _block(draw, g, t, depth + 1)
        final = _block(draw, g, t, depth + 1)
        return ("try", label, body, final)
    if kind == "catch":
        label = g.label()
        return ("catch", label, _block(draw, g, t, depth + 1))
    if kind == "group":
        name = f"G{g.groups}"
        g.groups += 1
        g.all_scopes.append(name)
        t.groups.append(name)
        saved, t.shieldable = t.shieldable, []
        # most groups get a child at once (a group without children tests little)
        first = _spawn(draw, g, t, depth) if draw(st.integers(0, 3)) else None
        body = _block(draw, g, t, depth + 1, first)
        t.shieldable = saved
        t.groups.pop()
        return ("group", name, body)
    return _spawn(draw, g, t, depth)


def _spawn(draw: Any, g: _GenState, t: _TaskState, depth: int) -> Op:
    if not t.groups or g.tasks >= MAX_TASKS:
        return ("cp", g.label())
    g.tasks += 1
    name = f"T{g.tasks}"
    child = _TaskState(parent_group=t.groups[-1])
    return ("spawn", name, _block(draw, g, child, depth + 1))


@st.composite
def programs(draw: Any, budget: int = 16, max_depth: int = 4) -> Program:
    """Random race-free programs (see the module docstring)."""
    g = _GenState(budget=budget, max_depth=max_depth)
    main = _block(draw, g, _TaskState(), 0)
    actions: list[Action] = []
    if g.all_scopes:
        count = draw(st.integers(0, 3))
        ticks = draw(st.lists(st.integers(0, 3), min_size=count, max_size=count, unique=True))
        for tick in sorted(ticks):
            how = draw(st.sampled_from(("task", "thread")))
            actions.append((tick, how, draw(st.sampled_from(g.all_scopes))))
    return Program(main, tuple(actions))
