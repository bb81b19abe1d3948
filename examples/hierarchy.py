"""Parent and child operations, in every run mode.

1. a parent with three child tasks: ``parent.cancel()`` reaches every child (reason PARENT);
2. a grandchild learns about its grandparent's cancellation through the whole chain;
3. a parent's *timeout* reaches its children too (reason PARENT), the parent records TIMEOUT;
4. cancelling a child leaves its parent and siblings running;
5. a child created (not yet entered) under a cancelled parent stops at its first checkpoint.

Run it::

    python examples/hierarchy.py                 # asyncio, uvloop, anyio, trio
    python examples/hierarchy.py trio            # one mode

Parenthood is explicit (``parent=``); ``current_operation()`` tells a task which operation it
runs in, which is how the children below find their parent.
"""

from __future__ import annotations

import sys

from _common import outcome, parse_modes, run, say, section

from hother.cancelable import (
    Cancellable,
    CancellationReason,
    OperationContext,
    current_operation,
    get_backend,
)


async def parent_cancel_demo() -> None:
    section("1. parent.cancel() reaches every child")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    children: list[Cancellable] = []
    ready = backend.create_event()

    def on_cancel(ctx: OperationContext) -> None:
        reason = ctx.cancel_reason.value if ctx.cancel_reason else None
        say(f"on_cancel: {ctx.name} ({reason})")

    async def worker(i: int) -> None:
        parent = current_operation()  # the task inherited the parent as current operation
        child = Cancellable(name=f"child_{i}", parent=parent).on_cancel(on_cancel)
        children.append(child)
        try:
            async with child:
                if len(children) == 3:
                    ready.set()
                await backend.sleep(10)
        except cancelled:
            pass

    parent = Cancellable(name="parent")
    try:
        async with parent, backend.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(worker, i)
            await ready.wait()
            await parent.cancel(CancellationReason.MANUAL, "shutting down")
            await backend.sleep(10)
    except cancelled:
        pass
    for child in sorted(children, key=lambda c: c.context.name or ""):
        parent_id = child.context.parent_id or ""
        say(f"{child.context.name}: {outcome(child)} parent_id={parent_id[:8]}")
    say(f"parent: {outcome(parent)} id={parent.operation_id[:8]}")


async def grandchild_demo() -> None:
    section("2. grandparent -> parent -> grandchild")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    grandparent = Cancellable(name="grandparent")
    parent = Cancellable(name="parent", parent=grandparent)
    grandchild = Cancellable(name="grandchild", parent=parent)
    try:
        async with grandparent, parent, grandchild:
            grandparent.cancel_sync(message="stop everything")  # the sync twin, callable anywhere
            await backend.sleep(10)
    except cancelled:
        pass
    for op in (grandparent, parent, grandchild):
        say(f"{op.context.name}: {outcome(op)}")


async def parent_timeout_demo() -> None:
    section("3. a parent's timeout")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    parent = Cancellable.with_timeout(0.05, name="batch")
    child = Cancellable(name="item", parent=parent)
    try:
        async with parent:
            async with child:
                await backend.sleep(10)
    except cancelled:
        pass
    say(f"batch: {outcome(parent)}")
    say(f"item: {outcome(child)}")


async def child_cancel_demo() -> None:
    section("4. cancelling one child")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    async with Cancellable(name="pipeline") as parent:
        first = Cancellable(name="stage_1", parent=parent)
        second = Cancellable(name="stage_2", parent=parent)
        try:
            async with first:
                await first.cancel(message="stage 1 skipped")
                await backend.sleep(10)
        except cancelled:
            pass
        async with second:
            await backend.sleep(0.001)
        say(f"stage_1: {outcome(first)}")
        say(f"stage_2: {outcome(second)}")
        say(f"pipeline still running: {parent.is_running}")
    say(f"pipeline: {outcome(parent)}")


async def late_child_demo() -> None:
    section("5. a child entered after its parent was cancelled")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    parent = Cancellable(name="job")
    late = Cancellable(name="late_child", parent=parent)
    await parent.cancel(message="job abandoned")  # not entered yet: a pre-cancellation
    reached = False
    try:
        async with late:
            await backend.sleep(0)
            reached = True
    except cancelled:
        pass
    say(f"late_child: {outcome(late)}; body ran past its first checkpoint: {reached}")


async def demo() -> None:
    await parent_cancel_demo()
    await grandchild_demo()
    await parent_timeout_demo()
    await child_cancel_demo()
    await late_child_demo()


def main() -> int:
    modes = parse_modes(sys.argv[1:])
    for mode in modes:
        run(mode, demo)
    print("hierarchy finished on:", ", ".join(modes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
