"""A parent/child hierarchy of operations (root -> 3 branches -> 3 leaves each, every node
running its children in a task group): cancelling a branch stops exactly its subtree,
a root timeout or a registry cancel from a plain thread stops everything, and nodes always
finish in strict nesting order (children before their parent)."""

from __future__ import annotations

import threading
from typing import Any

from hother.cancelable import (
    Cancellable,
    CancellationReason,
    OperationRegistry,
    OperationStatus,
)

BRANCHES = ("a", "b", "c")
LEAVES = (1, 2, 3)
ALL = 1 + len(BRANCHES) * (1 + len(LEAVES))


class Tree:
    """Runs the hierarchy; records every node and the order nodes finish in."""

    def __init__(self, backend: Any, root: Cancellable) -> None:
        self.backend = backend
        self.cancel_exc = backend.get_cancelled_exc_class()
        self.root = root
        self.nodes: dict[str, Cancellable] = {"root": root}
        self.finished: list[str] = []
        self.entered = 0
        self.all_in = backend.create_event()
        self.finish_leaves = backend.create_event()
        self.all_in_thread = threading.Event()

    def _node(self, name: str, op: Cancellable) -> Cancellable:
        self.nodes[name] = op
        op.on_complete(lambda _c: self.finished.append(name))
        op.on_cancel(lambda _c: self.finished.append(name))
        return op

    def _entered(self) -> None:
        self.entered += 1
        if self.entered == ALL:
            self.all_in.set()
            self.all_in_thread.set()

    @staticmethod
    def _swallow_own(op: Cancellable) -> None:
        """Catch the cancellation of ``op`` itself; a parent's (reason PARENT) goes on up
        to the scope it belongs to (a body that swallows it would complete normally)."""
        if not op.is_cancelled or op.context.cancel_reason == CancellationReason.PARENT:
            raise

    async def leaf(self, name: str, parent: Cancellable) -> None:
        op = self._node(name, Cancellable(name=name, parent=parent))
        try:
            async with op:
                self._entered()
                await self.finish_leaves.wait()
        except self.cancel_exc:
            self._swallow_own(op)

    async def branch(self, name: str, parent: Cancellable) -> None:
        op = self._node(name, Cancellable(name=name, parent=parent, register_globally=True))
        try:
            async with op:
                self._entered()
                async with self.backend.create_task_group() as tg:
                    for leaf in LEAVES:
                        tg.start_soon(self.leaf, f"{name}{leaf}", op)
        except self.cancel_exc:
            self._swallow_own(op)

    async def run(self, during: Any = None) -> None:
        root = self._node("root", self.root)
        async with root:
            self._entered()
            async with self.backend.create_task_group() as tg:
                for name in BRANCHES:
                    tg.start_soon(self.branch, name, root)
                if during is not None:
                    await self.all_in.wait()
                    await during(self)

    def assert_nesting_order(self) -> None:
        index = {name: i for i, name in enumerate(self.finished)}
        assert len(index) == ALL, self.finished
        for name, op in self.nodes.items():
            parent = op.parent
            if parent is not None:
                parent_name = next(n for n, o in self.nodes.items() if o is parent)
                assert index[name] < index[parent_name], (name, parent_name, self.finished)


async def test_cancelling_a_branch_stops_exactly_its_subtree(backend: Any) -> None:
    tree = Tree(backend, Cancellable(name="root"))

    async def during(t: Tree) -> None:
        await t.nodes["b"].cancel(CancellationReason.MANUAL, "branch b stopped")
        await backend.sleep(0.01)
        t.finish_leaves.set()

    await tree.run(during)
    nodes = tree.nodes
    assert nodes["b"].status == OperationStatus.CANCELLED
    assert nodes["b"].context.cancel_reason == CancellationReason.MANUAL
    assert nodes["b"].context.cancel_message == "branch b stopped"
    for leaf in LEAVES:
        ctx = nodes[f"b{leaf}"].context
        assert ctx.status == OperationStatus.CANCELLED and ctx.cancel_reason == (
            CancellationReason.PARENT
        ), ctx
    for name in ("root", "a", "c", *(f"{x}{n}" for x in "ac" for n in LEAVES)):
        assert nodes[name].status == OperationStatus.COMPLETED, name
    tree.assert_nesting_order()


async def test_root_timeout_stops_the_whole_tree(backend: Any) -> None:
    tree = Tree(backend, Cancellable.with_timeout(0.2, name="root"))
    try:
        await tree.run()
    except tree.cancel_exc:
        pass
    assert tree.root.context.cancel_reason == CancellationReason.TIMEOUT
    for name, op in tree.nodes.items():
        assert op.status == OperationStatus.CANCELLED, name
        if name != "root":
            assert op.context.cancel_reason == CancellationReason.PARENT, (name, op.context)
    tree.assert_nesting_order()


async def test_registry_cancel_from_a_thread_stops_the_tree(backend: Any) -> None:
    """A monitoring thread finds the root in the registry and cancels it."""
    tree = Tree(backend, Cancellable(name="root-registered", register_globally=True))
    registry = OperationRegistry.get_instance()
    results: list[bool] = []

    def monitor() -> None:
        if tree.all_in_thread.wait(30):
            (ctx,) = registry.list_operations_sync(name_pattern="root-registered")
            results.append(registry.cancel_operation_sync(ctx.id, message="monitor"))

    thread = threading.Thread(target=monitor)
    thread.start()
    try:
        await tree.run()
    except tree.cancel_exc:
        pass
    finally:
        tree.all_in_thread.set()
        thread.join(10)
    assert results == [True]
    assert tree.root.context.cancel_reason == CancellationReason.MANUAL
    assert tree.root.context.cancel_message == "monitor"
    for name, op in tree.nodes.items():
        assert op.status == OperationStatus.CANCELLED, name
        if name != "root":
            assert op.context.cancel_reason == CancellationReason.PARENT, (name, op.context)
    tree.assert_nesting_order()
    assert registry.list_operations_sync() == []
