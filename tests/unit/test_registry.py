"""OperationRegistry (API §7, contract §13.6, §14.11, §14.28) and the C RegistryTable."""

from __future__ import annotations

import gc
import logging
import sys
import threading
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hother.cancelable import _engine
from hother.cancelable._engine import RegistryTable
from hother.cancelable.core.cancellable import Cancellable
from hother.cancelable.core.models import CancellationReason, OperationContext, OperationStatus
from hother.cancelable.core.registry import OperationRegistry


class FakeOperation:
    """Minimal stand-in for a Cancellable: a context plus recording cancel methods."""

    def __init__(
        self,
        name: str | None = None,
        status: OperationStatus = OperationStatus.RUNNING,
        parent_id: str | None = None,
        operation_id: str | None = None,
        fail_cancel: bool = False,
    ) -> None:
        kwargs: dict[str, Any] = {"name": name, "status": status, "parent_id": parent_id}
        if operation_id is not None:
            kwargs["id"] = operation_id
        self.context = OperationContext(**kwargs)
        self.cancels: list[tuple[str, CancellationReason, str | None]] = []
        self.fail_cancel = fail_cancel

    async def cancel(
        self,
        reason: CancellationReason = CancellationReason.MANUAL,
        message: str | None = None,
        propagate_to_children: bool = True,
    ) -> None:
        if self.fail_cancel:
            raise RuntimeError("cannot cancel")
        self.cancels.append(("async", reason, message))

    def cancel_sync(
        self, reason: CancellationReason = CancellationReason.MANUAL, message: str | None = None
    ) -> bool:
        if self.fail_cancel:
            raise RuntimeError("cannot cancel")
        self.cancels.append(("sync", reason, message))
        return True


def finished(status: OperationStatus, seconds: float = 1.0, ago: float = 0.0) -> FakeOperation:
    op = FakeOperation(status=status)
    end = datetime.now(UTC) - timedelta(seconds=ago)
    op.context.start_time = end - timedelta(seconds=seconds)
    op.context.end_time = end
    return op


@pytest.fixture(autouse=True)
def registry() -> Iterator[OperationRegistry]:
    OperationRegistry._instance = None
    try:
        yield OperationRegistry.get_instance()
    finally:
        OperationRegistry._instance = None


# ==================================================================== RegistryTable (C)


class TestRegistryTable:
    def test_basic_mapping(self) -> None:
        t = RegistryTable()
        a, b = object(), object()
        assert len(t) == 0 and "k" not in t
        assert t.set("k", a) is None
        assert t.get("k") is a and "k" in t and len(t) == 1
        assert t.set("k", b) is a
        assert t.get("k") is b and len(t) == 1
        assert t.get("missing") is None
        assert t.get("missing", 5) == 5
        assert t.pop("k") is b
        assert t.pop("k") is None
        assert t.pop("k", "dflt") == "dflt"
        assert len(t) == 0

    def test_none_and_falsy_values(self) -> None:
        t = RegistryTable()
        t.set("n", None)
        t.set("z", 0)
        assert "n" in t and t.get("n", "d") is None
        assert t.get("z") == 0
        assert sorted(map(repr, t.values())) == ["0", "None"]

    def test_unicode_keys(self) -> None:
        t = RegistryTable()
        t.set("é-ü-日本", 1)
        t.set("", 2)
        assert t.get("é-ü-日本") == 1 and t.get("") == 2
        assert t.get("e-u") is None

    def test_subscript_protocol(self) -> None:
        t = RegistryTable()
        t["a"] = 1
        assert t["a"] == 1
        with pytest.raises(KeyError):
            t["b"]
        del t["a"]
        with pytest.raises(KeyError):
            del t["a"]

    def test_values_is_snapshot(self) -> None:
        t = RegistryTable()
        for i in range(100):
            t.set(f"k{i}", i)
        vals = t.values()
        assert sorted(vals) == list(range(100))
        t.clear()
        assert sorted(vals) == list(range(100))
        assert t.values() == []

    def test_clear_returns_removed(self) -> None:
        t = RegistryTable()
        for i in range(10):
            t.set(str(i), i)
        removed = t.clear()
        assert sorted(removed) == list(range(10))
        assert len(t) == 0 and t.clear() == []
        t.set("again", 1)  # usable after clear
        assert t.get("again") == 1

    def test_discard_only_same_object(self) -> None:
        t = RegistryTable()
        a, b = object(), object()
        t.set("k", a)
        assert t.discard("k", b) is False
        assert t.get("k") is a
        assert t.discard("k", a) is True
        assert "k" not in t
        assert t.discard("k", a) is False

    def test_many_keys_and_churn(self) -> None:
        t = RegistryTable()
        for i in range(5000):
            t.set(f"id-{i}", i)
        for i in range(0, 5000, 2):
            assert t.pop(f"id-{i}") == i
        assert len(t) == 2500
        assert all(t.get(f"id-{i}") == i for i in range(1, 5000, 2))
        for round_ in range(20):
            for i in range(200):
                t.set(f"churn-{round_}-{i}", i)
            for i in range(200):
                t.pop(f"churn-{round_}-{i}")
        assert len(t) == 2500

    @pytest.mark.parametrize("key", [1, b"k", None, ("k",), 1.5])
    def test_non_str_key_type_error(self, key: Any) -> None:
        t = RegistryTable()
        for call in (
            lambda: t.set(key, 1),
            lambda: t.get(key),
            lambda: t.pop(key),
            lambda: t.discard(key, 1),
            lambda: key in t,
            lambda: t[key],
        ):
            with pytest.raises(TypeError, match="key"):
                call()

    def test_unencodable_and_nul_keys(self) -> None:
        t = RegistryTable()
        with pytest.raises(ValueError, match="key"):
            t.set("bad\ud800", 1)
        with pytest.raises(ValueError, match="key"):
            t.get("\udfff")
        with pytest.raises(ValueError, match="NUL"):
            t.set("a\0b", 1)
        assert len(t) == 0

    def test_argument_errors(self) -> None:
        t = RegistryTable()
        with pytest.raises(TypeError):
            t.set("k")  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            t.get()  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            t.pop("a", 1, 2)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            RegistryTable(1)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            RegistryTable(x=1)  # type: ignore[call-arg]

    def test_refcounts_balanced(self) -> None:
        t = RegistryTable()
        obj, other = object(), object()
        base = sys.getrefcount(obj)
        t.set("a", obj)
        assert sys.getrefcount(obj) == base + 1
        t.set("a", obj)  # replaced by itself: still one reference held
        assert sys.getrefcount(obj) == base + 1
        t["b"] = obj
        assert sys.getrefcount(obj) == base + 2
        t.set("b", other)  # replacement releases obj's reference
        assert sys.getrefcount(obj) == base + 1
        vals = t.values()
        assert sys.getrefcount(obj) == base + 2
        del vals
        assert t.get("a") is obj and t.get("zz", obj) is obj
        assert sys.getrefcount(obj) == base + 1
        t.pop("a")
        assert sys.getrefcount(obj) == base
        t.set("a", obj)
        assert t.discard("a", obj)
        assert sys.getrefcount(obj) == base
        t.set("a", obj)
        del t["a"]
        assert sys.getrefcount(obj) == base
        t.set("a", obj)
        removed = t.clear()
        assert sys.getrefcount(obj) == base + 1
        del removed
        assert sys.getrefcount(obj) == base
        t.set("a", obj)
        del t
        assert sys.getrefcount(obj) == base

    def test_live_objects_and_gc_cycle(self) -> None:
        gc.collect()
        start = _engine.live_objects()["RegistryTable"]

        class Holder:
            table: RegistryTable

        t = RegistryTable()
        assert _engine.live_objects()["RegistryTable"] == start + 1
        h = Holder()
        h.table = t
        t.set("self", h)  # cycle: table -> holder -> table
        ref = weakref.ref(h)
        assert gc.is_tracked(t)
        assert h in gc.get_referents(t)
        del t, h
        gc.collect()
        assert ref() is None
        assert _engine.live_objects()["RegistryTable"] == start

    def test_finalizer_may_reenter_table(self) -> None:
        """Releasing values never happens under the C table's lock (no deadlock)."""
        t = RegistryTable()
        log: list[str] = []

        class Reenter:
            def __init__(self, name: str) -> None:
                self.name = name

            def __del__(self) -> None:
                t.set(f"after-{self.name}", 1)
                log.append(f"{self.name}:{len(t)}:{len(t.values())}")

        t.set("a", Reenter("a"))
        t.set("a", 0)  # replaced value released by the caller, after the C call
        t.set("b", Reenter("b"))
        t.pop("b")
        t.set("c", Reenter("c"))
        t.clear()
        t.set("d", Reenter("d"))
        del t["d"]
        assert [entry.split(":")[0] for entry in log] == ["a", "b", "c", "d"]
        # clear() removed after-a/after-b; the later finalisers wrote after it.
        assert "after-a" not in t and "after-b" not in t
        assert "after-c" in t and "after-d" in t

    def test_finalizer_reentry_during_table_dealloc(self) -> None:
        other = RegistryTable()

        class Touch:
            def __del__(self) -> None:
                other.set("touched", 1)

        t = RegistryTable()
        t.set("x", Touch())
        del t
        assert other.get("touched") == 1

    def test_concurrent_threads(self) -> None:
        t = RegistryTable()
        n_threads, per_thread = 8, 2000
        barrier = threading.Barrier(n_threads)
        errors: list[BaseException] = []

        def worker(w: int) -> None:
            try:
                barrier.wait()
                for i in range(per_thread):
                    t.set(f"{w}-{i}", i)
                    if i % 3 == 0:
                        assert t.pop(f"{w}-{i}") == i
                    if i % 100 == 0:
                        t.values()
                        len(t)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []
        kept = per_thread - len(range(0, per_thread, 3))
        assert len(t) == n_threads * kept
        assert len(t.values()) == n_threads * kept

    @settings(max_examples=100, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["set", "pop", "get", "discard", "clear", "contains"]),
                st.text(max_size=4).filter(lambda k: "\0" not in k and k.isprintable()),
                st.integers(),
            ),
            max_size=60,
        )
    )
    def test_behaves_like_a_dict(self, ops: list[tuple[str, str, int]]) -> None:
        t = RegistryTable()
        model: dict[str, int] = {}
        for op, key, value in ops:
            if op == "set":
                assert t.set(key, value) == model.get(key)
                model[key] = value
            elif op == "pop":
                assert t.pop(key) == model.pop(key, None)
            elif op == "get":
                assert t.get(key) == model.get(key)
            elif op == "discard":
                current = t.get(key)
                assert t.discard(key, current) is (key in model)
                model.pop(key, None)
            elif op == "clear":
                assert sorted(t.clear()) == sorted(model.values())
                model.clear()
            else:
                assert (key in t) is (key in model)
            assert len(t) == len(model)
        assert sorted(t.values()) == sorted(model.values())

    def test_repr(self) -> None:
        t = RegistryTable()
        t.set("a", 1)
        assert "RegistryTable" in repr(t) and "len=1" in repr(t)


# ===================================================================== OperationRegistry


def test_singleton(registry: OperationRegistry) -> None:
    assert OperationRegistry.get_instance() is registry
    assert OperationRegistry() is registry
    OperationRegistry._instance = None
    fresh = OperationRegistry.get_instance()
    assert fresh is not registry
    assert OperationRegistry() is fresh


def test_singleton_thread_safe_creation() -> None:
    OperationRegistry._instance = None
    n = 16
    barrier = threading.Barrier(n)
    seen: list[OperationRegistry] = []
    lock = threading.Lock()

    def make() -> None:
        barrier.wait()
        inst = OperationRegistry.get_instance()
        with lock:
            seen.append(inst)

    threads = [threading.Thread(target=make) for _ in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(seen) == n
    assert all(s is seen[0] for s in seen)
    assert OperationRegistry._instance is seen[0]


def test_no_loop_bound_lock(registry: OperationRegistry) -> None:
    """§14.11: the registry holds only threading locks (usable from any loop or thread)."""
    assert isinstance(registry._lock, type(threading.Lock()))


async def test_register_get_unregister(registry: OperationRegistry) -> None:
    op = FakeOperation(name="job")
    await registry.register(op)  # type: ignore[arg-type]
    got: object = await registry.get_operation(op.context.id)
    assert got is op
    await registry.unregister(op.context.id)
    assert await registry.get_operation(op.context.id) is None
    history = await registry.get_history()
    assert [c.id for c in history] == [op.context.id]
    assert history[0] is not op.context
    await registry.unregister(op.context.id)  # unknown id: no-op
    assert len(await registry.get_history()) == 1


async def test_register_same_id_overwrites(registry: OperationRegistry) -> None:
    a = FakeOperation(operation_id="same")
    b = FakeOperation(operation_id="same")
    await registry.register(a)  # type: ignore[arg-type]
    await registry.register(b)  # type: ignore[arg-type]
    got: object = await registry.get_operation("same")
    assert got is b
    assert (await registry.get_statistics())["active_operations"] == 1


async def test_history_is_deep_copy(registry: OperationRegistry) -> None:
    op = FakeOperation(status=OperationStatus.COMPLETED)
    op.context.metadata["items"] = [1]
    await registry.register(op)  # type: ignore[arg-type]
    await registry.unregister(op.context.id)
    op.context.metadata["items"].append(2)
    op.context.status = OperationStatus.FAILED
    (entry,) = await registry.get_history()
    assert entry.metadata == {"items": [1]}
    assert entry.status is OperationStatus.COMPLETED


async def test_history_with_uncopyable_metadata(registry: OperationRegistry) -> None:
    op = FakeOperation()
    lock = threading.Lock()
    op.context.metadata["lock"] = lock  # cannot be deep-copied
    await registry.register(op)  # type: ignore[arg-type]
    await registry.unregister(op.context.id)
    (entry,) = await registry.get_history()
    assert entry.id == op.context.id
    assert entry.metadata["lock"] is lock


async def test_list_operations_filters(registry: OperationRegistry) -> None:
    parent = FakeOperation(name="Parent Task")
    child = FakeOperation(name="child-download", parent_id=parent.context.id)
    pending = FakeOperation(name="other", status=OperationStatus.PENDING)
    unnamed = FakeOperation(name=None, status=OperationStatus.PENDING)
    for op in (parent, child, pending, unnamed):
        await registry.register(op)  # type: ignore[arg-type]
    assert len(await registry.list_operations()) == 4
    running = await registry.list_operations(status=OperationStatus.RUNNING)
    assert {c.id for c in running} == {parent.context.id, child.context.id}
    by_value = await registry.list_operations(status="running")  # type: ignore[arg-type]
    assert {c.id for c in by_value} == {parent.context.id, child.context.id}
    children = await registry.list_operations(parent_id=parent.context.id)
    assert [c.id for c in children] == [child.context.id]
    named = await registry.list_operations(name_pattern="TASK")
    assert [c.id for c in named] == [parent.context.id]
    assert {c.id for c in await registry.list_operations(name_pattern="d")} == {child.context.id}
    # falsy filters are ignored
    assert len(await registry.list_operations(status=None, parent_id="", name_pattern="")) == 4
    both = await registry.list_operations(status=OperationStatus.RUNNING, name_pattern="child")
    assert [c.id for c in both] == [child.context.id]


async def test_list_operations_oldest_first(registry: OperationRegistry) -> None:
    ops = [FakeOperation(name=f"op{i}") for i in range(5)]
    base = datetime.now(UTC)
    for i, op in enumerate(ops):
        op.context.start_time = base - timedelta(seconds=10 - i)
    for op in reversed(ops):
        await registry.register(op)  # type: ignore[arg-type]
    assert [c.name for c in await registry.list_operations()] == [f"op{i}" for i in range(5)]


async def test_listing_returns_snapshots_not_live(registry: OperationRegistry) -> None:
    op = FakeOperation(name="live")
    op.context.metadata["k"] = "v"
    await registry.register(op)  # type: ignore[arg-type]
    (snap,) = await registry.list_operations()
    assert snap is not op.context
    assert snap == op.context
    snap.status = OperationStatus.CANCELLED
    snap.metadata["k"] = "changed"
    snap.child_ids.add("x")
    assert op.context.status is OperationStatus.RUNNING
    assert op.context.metadata == {"k": "v"}
    assert op.context.child_ids == set()
    # A later change of the live context is not reflected in the old snapshot.
    op.context.update_status(OperationStatus.COMPLETED)
    assert snap.status is OperationStatus.CANCELLED
    (hist_snap,) = registry.list_operations_sync()
    assert hist_snap.status is OperationStatus.COMPLETED


async def test_history_entries_are_copies(registry: OperationRegistry) -> None:
    op = FakeOperation(status=OperationStatus.COMPLETED)
    await registry.register(op)  # type: ignore[arg-type]
    await registry.unregister(op.context.id)
    (first,) = await registry.get_history()
    first.status = OperationStatus.FAILED
    (again,) = await registry.get_history()
    assert again.status is OperationStatus.COMPLETED


async def test_cancel_operation(registry: OperationRegistry) -> None:
    op = FakeOperation()
    await registry.register(op)  # type: ignore[arg-type]
    assert await registry.cancel_operation(op.context.id, CancellationReason.SIGNAL, "stop")
    assert op.cancels == [("async", CancellationReason.SIGNAL, "stop")]
    assert await registry.cancel_operation(op.context.id)
    assert op.cancels[-1] == ("async", CancellationReason.MANUAL, None)


async def test_cancel_unknown_operation_warns(
    registry: OperationRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """§14.1: the warning path works (0.1.x raised TypeError from the logger call)."""
    with caplog.at_level(logging.DEBUG, logger="hother.cancelable"):
        assert await registry.cancel_operation("nope") is False
        assert registry.cancel_operation_sync("nope") is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all(r.__dict__["operation_id"] == "nope" for r in warnings)


async def test_cancel_all(registry: OperationRegistry) -> None:
    running = [FakeOperation() for _ in range(3)]
    done = FakeOperation(status=OperationStatus.COMPLETED)
    for op in (*running, done):
        await registry.register(op)  # type: ignore[arg-type]
    assert await registry.cancel_all(status=OperationStatus.RUNNING) == 3
    for op in running:
        assert op.cancels == [("async", CancellationReason.MANUAL, "Bulk cancellation")]
    assert done.cancels == []
    assert await registry.cancel_all(reason=CancellationReason.SIGNAL, message="bye") == 4
    assert done.cancels == [("async", CancellationReason.SIGNAL, "bye")]


async def test_cancel_all_logs_and_skips_failures(
    registry: OperationRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    good = FakeOperation()
    bad = FakeOperation(fail_cancel=True)
    await registry.register(good)  # type: ignore[arg-type]
    await registry.register(bad)  # type: ignore[arg-type]
    with caplog.at_level(logging.DEBUG, logger="hother.cancelable"):
        assert await registry.cancel_all() == 1
        assert registry.cancel_all_sync() == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert all(r.__dict__["operation_id"] == bad.context.id for r in errors)
    assert all(r.exc_info is not None for r in errors)
    assert good.cancels == [
        ("async", CancellationReason.MANUAL, "Bulk cancellation"),
        ("sync", CancellationReason.MANUAL, "Bulk cancellation"),
    ]


async def test_history_queries(registry: OperationRegistry) -> None:
    statuses = [
        OperationStatus.COMPLETED,
        OperationStatus.FAILED,
        OperationStatus.COMPLETED,
        OperationStatus.CANCELLED,
        OperationStatus.COMPLETED,
    ]
    ops = [finished(s) for s in statuses]
    for op in ops:
        await registry.register(op)  # type: ignore[arg-type]
        await registry.unregister(op.context.id)
    history = await registry.get_history()
    assert [c.id for c in history] == [op.context.id for op in ops]
    assert len(await registry.get_history(status=OperationStatus.COMPLETED)) == 3
    last_two = await registry.get_history(limit=2)
    assert [c.id for c in last_two] == [ops[3].context.id, ops[4].context.id]
    assert len(await registry.get_history(limit=0)) == 5
    minute_ago = datetime.now(UTC) - timedelta(minutes=1)
    assert len(await registry.get_history(since=minute_ago)) == 5
    assert await registry.get_history(since=datetime.now(UTC) + timedelta(minutes=1)) == []
    naive_local = datetime.now() - timedelta(minutes=1)
    assert len(await registry.get_history(since=naive_local)) == 5
    limited = await registry.get_history(limit=1, status=OperationStatus.COMPLETED)
    assert [c.id for c in limited] == [ops[4].context.id]


async def test_history_since_excludes_entries_without_end(registry: OperationRegistry) -> None:
    op = FakeOperation(status=OperationStatus.RUNNING)
    await registry.register(op)  # type: ignore[arg-type]
    await registry.unregister(op.context.id)
    assert len(await registry.get_history()) == 1
    assert await registry.get_history(since=datetime.now(UTC) - timedelta(days=1)) == []


async def test_cleanup_completed(registry: OperationRegistry) -> None:
    ops = [
        FakeOperation(status=OperationStatus.RUNNING),
        finished(OperationStatus.COMPLETED),
        finished(OperationStatus.FAILED),
        finished(OperationStatus.CANCELLED),
        finished(OperationStatus.COMPLETED),
        FakeOperation(status=OperationStatus.RUNNING),
    ]
    for op in ops:
        await registry.register(op)  # type: ignore[arg-type]
    assert await registry.cleanup_completed(keep_failed=True) == 3
    active = {c.id for c in await registry.list_operations()}
    assert active == {ops[0].context.id, ops[2].context.id, ops[5].context.id}
    assert len(await registry.get_history()) == 3
    assert await registry.cleanup_completed(keep_failed=False) == 1
    assert len(await registry.list_operations()) == 2


async def test_cleanup_completed_older_than(registry: OperationRegistry) -> None:
    old = finished(OperationStatus.COMPLETED, ago=7200)
    recent = finished(OperationStatus.COMPLETED, ago=60)
    no_end = FakeOperation(status=OperationStatus.CANCELLED)
    for op in (old, recent, no_end):
        await registry.register(op)  # type: ignore[arg-type]
    assert await registry.cleanup_completed(older_than=timedelta(hours=1)) == 2
    assert [c.id for c in await registry.list_operations()] == [recent.context.id]
    assert {c.id for c in await registry.get_history()} == {old.context.id, no_end.context.id}


async def test_statistics(registry: OperationRegistry) -> None:
    for _ in range(2):
        await registry.register(FakeOperation())  # type: ignore[arg-type]
    for seconds in (1.0, 2.0, 3.0):
        op = finished(OperationStatus.COMPLETED, seconds=seconds)
        await registry.register(op)  # type: ignore[arg-type]
        await registry.unregister(op.context.id)
    stats = await registry.get_statistics()
    assert stats == {
        "active_operations": 2,
        "active_by_status": {"running": 2},
        "history_size": 3,
        "history_by_status": {"completed": 3},
        "average_duration_seconds": 2.0,
        "total_completed": 3,
    }
    assert registry.get_statistics_sync() == stats


async def test_statistics_empty(registry: OperationRegistry) -> None:
    stats = await registry.get_statistics()
    assert stats["average_duration_seconds"] == 0.0
    assert stats["active_operations"] == 0 and stats["history_size"] == 0


async def test_history_limit(registry: OperationRegistry) -> None:
    registry._history_limit = 10
    ops = [finished(OperationStatus.COMPLETED) for _ in range(15)]
    for op in ops:
        await registry.register(op)  # type: ignore[arg-type]
        await registry.unregister(op.context.id)
    history = await registry.get_history()
    assert [c.id for c in history] == [op.context.id for op in ops[-10:]]
    registry._history_limit = 3
    extra = finished(OperationStatus.FAILED)
    await registry.register(extra)  # type: ignore[arg-type]
    await registry.unregister(extra.context.id)
    assert [c.id for c in await registry.get_history()] == [
        ops[-2].context.id,
        ops[-1].context.id,
        extra.context.id,
    ]


async def test_clear_all(registry: OperationRegistry, caplog: pytest.LogCaptureFixture) -> None:
    op = FakeOperation()
    await registry.register(op)  # type: ignore[arg-type]
    await registry.register(FakeOperation())  # type: ignore[arg-type]
    await registry.unregister(op.context.id)
    with caplog.at_level(logging.WARNING, logger="hother.cancelable"):
        await registry.clear_all()
    assert await registry.list_operations() == []
    assert await registry.get_history() == []
    assert any(r.getMessage() == "registry cleared" for r in caplog.records)


def test_sync_twins(registry: OperationRegistry) -> None:
    op = FakeOperation(name="sync-op")
    registry.register_sync(op)  # type: ignore[arg-type]
    got: object = registry.get_operation_sync(op.context.id)
    assert got is op
    assert [c.id for c in registry.list_operations_sync(name_pattern="SYNC")] == [op.context.id]
    assert registry.cancel_operation_sync(op.context.id, CancellationReason.SIGNAL, "m")
    assert op.cancels == [("sync", CancellationReason.SIGNAL, "m")]
    assert registry.cancel_all_sync(OperationStatus.RUNNING) == 1
    assert registry.get_statistics_sync()["active_operations"] == 1
    op.context.update_status(OperationStatus.COMPLETED)
    assert registry.cleanup_completed_sync() == 1
    assert [c.id for c in registry.get_history_sync()] == [op.context.id]
    registry.register_sync(op)  # type: ignore[arg-type]
    registry.unregister_sync(op.context.id)
    assert len(registry.get_history_sync()) == 2
    registry.clear_all_sync()
    assert registry.get_history_sync() == []


def test_logging_paths_do_not_raise_at_debug(
    registry: OperationRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """§14.1: with DEBUG enabled every registry log call works and uses ``extra``."""
    with caplog.at_level(logging.DEBUG, logger="hother.cancelable"):
        op = FakeOperation(name="logged")
        registry.register_sync(op)  # type: ignore[arg-type]
        registry.cancel_operation_sync(op.context.id)
        registry.cancel_all_sync()
        registry.unregister_sync(op.context.id)
    records = [r for r in caplog.records if r.name == "hother.cancelable.core.registry"]
    assert {r.getMessage() for r in records} >= {
        "operation registered",
        "operation unregistered",
    }
    registered = next(r for r in records if r.getMessage() == "operation registered")
    assert registered.levelno == logging.DEBUG
    assert registered.__dict__["operation_name"] == "logged"


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad_id", [1, None, b"id", ["x"]])
async def test_non_str_ids_rejected(registry: OperationRegistry, bad_id: Any) -> None:
    for call in (
        lambda: registry.get_operation_sync(bad_id),
        lambda: registry.unregister_sync(bad_id),
        lambda: registry.cancel_operation_sync(bad_id),
    ):
        with pytest.raises(TypeError, match="operation_id"):
            call()
    with pytest.raises(TypeError, match="operation_id"):
        await registry.get_operation(bad_id)
    with pytest.raises(TypeError, match="operation_id"):
        await registry.unregister(bad_id)
    with pytest.raises(TypeError, match="operation_id"):
        await registry.cancel_operation(bad_id)


def test_register_rejects_non_operations(registry: OperationRegistry) -> None:
    with pytest.raises(TypeError, match="operation"):
        registry.register_sync(object())  # type: ignore[arg-type]
    bad_ctx = FakeOperation()
    bad_ctx.context = {"id": "x"}  # type: ignore[assignment]
    with pytest.raises(TypeError, match="operation"):
        registry.register_sync(bad_ctx)  # type: ignore[arg-type]
    weird_id = FakeOperation()
    weird_id.context.id = 5  # type: ignore[assignment]
    with pytest.raises(TypeError, match=r"operation\.context\.id"):
        registry.register_sync(weird_id)  # type: ignore[arg-type]
    assert registry.get_statistics_sync()["active_operations"] == 0


def test_surrogate_id_is_an_error_not_a_crash(registry: OperationRegistry) -> None:
    with pytest.raises(ValueError):
        registry.get_operation_sync("bad\ud800")
    op = FakeOperation(operation_id="bad\udc00")
    with pytest.raises(ValueError):
        registry.register_sync(op)  # type: ignore[arg-type]


def test_bad_filters_and_arguments(registry: OperationRegistry) -> None:
    with pytest.raises(ValueError, match="status"):
        registry.list_operations_sync(status="bogus")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="status"):
        registry.list_operations_sync(status=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="parent_id"):
        registry.list_operations_sync(parent_id=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name_pattern"):
        registry.list_operations_sync(name_pattern=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reason"):
        registry.cancel_operation_sync("x", "manual")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="message"):
        registry.cancel_operation_sync("x", CancellationReason.MANUAL, 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reason"):
        registry.cancel_all_sync(reason=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="limit"):
        registry.get_history_sync(limit="3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        registry.get_history_sync(limit=-1)
    with pytest.raises(TypeError, match="since"):
        registry.get_history_sync(since="yesterday")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="older_than"):
        registry.cleanup_completed_sync(older_than=3600)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ thread safety


async def test_threads_and_loop_share_the_registry(registry: OperationRegistry) -> None:
    """Threads register/unregister/list/cancel while the event loop does the same."""
    n_threads, per_thread, loop_ops = 4, 150, 150
    registry._history_limit = 100_000
    barrier = threading.Barrier(n_threads + 1)
    errors: list[BaseException] = []
    survivors: list[FakeOperation] = []
    survivors_lock = threading.Lock()

    def worker(w: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                op = FakeOperation(name=f"thread-{w}-{i}")
                registry.register_sync(op)  # type: ignore[arg-type]
                got: object = registry.get_operation_sync(op.context.id)
                assert got is op
                if i % 10 == 0:
                    registry.list_operations_sync(name_pattern="thread")
                    registry.get_statistics_sync()
                    registry.get_history_sync(limit=5)
                    assert registry.cancel_operation_sync(op.context.id)
                if i % 5 == 0:
                    with survivors_lock:
                        survivors.append(op)
                else:
                    registry.unregister_sync(op.context.id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(n_threads)]
    for th in threads:
        th.start()
    barrier.wait()
    loop_kept: list[FakeOperation] = []
    for i in range(loop_ops):
        op = FakeOperation(name=f"loop-{i}")
        await registry.register(op)  # type: ignore[arg-type]
        if i % 10 == 0:
            await registry.list_operations(status=OperationStatus.RUNNING)
            await registry.get_statistics()
        if i % 3 == 0:
            loop_kept.append(op)
        else:
            await registry.unregister(op.context.id)
    for th in threads:
        th.join()
    assert errors == []
    kept_per_thread = len(range(0, per_thread, 5))
    unregistered = n_threads * (per_thread - kept_per_thread) + (loop_ops - len(loop_kept))
    stats = await registry.get_statistics()
    assert stats["active_operations"] == n_threads * kept_per_thread + len(loop_kept)
    assert stats["history_size"] == unregistered
    active_ids = {c.id for c in await registry.list_operations()}
    assert active_ids == {op.context.id for op in survivors + loop_kept}
    assert len(await registry.list_operations(name_pattern="thread")) == len(survivors)
    assert await registry.cancel_all() == len(active_ids)


# ------------------------------------------------- real Cancellable operations (§13.6)


async def _run_until_cancelled(
    op: Cancellable, entered: anyio.Event, outcome: dict[str, Any]
) -> None:
    try:
        async with op:
            entered.set()
            await anyio.sleep(60)
        outcome[op.context.id] = "completed"
    except anyio.get_cancelled_exc_class():
        outcome[op.context.id] = "cancelled"


async def test_register_globally_lifecycle(registry: OperationRegistry) -> None:
    op = Cancellable(operation_id="custom-op-123", name="custom_operation", register_globally=True)
    assert await registry.get_operation("custom-op-123") is None
    async with op:
        found: object = await registry.get_operation("custom-op-123")
        assert found is op
        (listed,) = await registry.list_operations(status=OperationStatus.RUNNING)
        assert (listed.id, listed.name) == ("custom-op-123", "custom_operation")
        assert listed is not op.context
    assert await registry.get_operation("custom-op-123") is None
    (entry,) = await registry.get_history()
    assert entry.id == "custom-op-123"
    assert entry.status is OperationStatus.COMPLETED
    assert entry.end_time is not None


async def test_cancel_operation_interrupts_running_task(registry: OperationRegistry) -> None:
    op = Cancellable(name="worker", register_globally=True)
    entered = anyio.Event()
    outcome: dict[str, Any] = {}
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_run_until_cancelled, op, entered, outcome)
            await entered.wait()
            assert await registry.cancel_operation(
                op.context.id, CancellationReason.MANUAL, "stop it"
            )
    assert outcome == {op.context.id: "cancelled"}
    assert op.context.status is OperationStatus.CANCELLED
    assert op.context.cancel_reason is CancellationReason.MANUAL
    assert op.context.cancel_message == "stop it"
    assert await registry.get_operation(op.context.id) is None
    (entry,) = await registry.get_history()
    assert entry.id == op.context.id
    assert entry.status is OperationStatus.CANCELLED


async def test_cancel_all_running_operations(registry: OperationRegistry) -> None:
    ops = [Cancellable(name=f"w{i}", register_globally=True) for i in range(3)]
    idle = FakeOperation(status=OperationStatus.PENDING)
    await registry.register(idle)  # type: ignore[arg-type]
    events = [anyio.Event() for _ in ops]
    outcome: dict[str, Any] = {}
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for op, ev in zip(ops, events, strict=True):
                tg.start_soon(_run_until_cancelled, op, ev, outcome)
            for ev in events:
                await ev.wait()
            assert await registry.cancel_all(status=OperationStatus.RUNNING) == 3
    assert outcome == {op.context.id: "cancelled" for op in ops}
    assert all(op.context.cancel_message == "Bulk cancellation" for op in ops)
    assert idle.cancels == []
    assert [c.id for c in await registry.list_operations()] == [idle.context.id]


async def test_cancel_operation_sync_from_a_thread(registry: OperationRegistry) -> None:
    """§14.28: a plain thread cancels a running operation; its event loop is woken."""
    op = Cancellable(name="threaded", register_globally=True)
    entered = anyio.Event()
    outcome: dict[str, Any] = {}
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_run_until_cancelled, op, entered, outcome)
            await entered.wait()
            found = await anyio.to_thread.run_sync(
                registry.cancel_operation_sync, op.context.id, CancellationReason.SIGNAL, "bye"
            )
            assert found is True
    assert outcome == {op.context.id: "cancelled"}
    assert op.context.cancel_reason is CancellationReason.SIGNAL
    assert op.context.cancel_message == "bye"


async def test_cancel_all_sync_from_a_thread(registry: OperationRegistry) -> None:
    ops = [Cancellable(name=f"t{i}", register_globally=True) for i in range(3)]
    events = [anyio.Event() for _ in ops]
    outcome: dict[str, Any] = {}
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for op, ev in zip(ops, events, strict=True):
                tg.start_soon(_run_until_cancelled, op, ev, outcome)
            for ev in events:
                await ev.wait()
            listed = await anyio.to_thread.run_sync(registry.list_operations_sync)
            assert {c.id for c in listed} == {op.context.id for op in ops}
            assert await anyio.to_thread.run_sync(registry.cancel_all_sync) == 3
    assert outcome == {op.context.id: "cancelled" for op in ops}
    stats = registry.get_statistics_sync()
    assert stats["active_operations"] == 0
    assert stats["history_by_status"] == {"cancelled": 3}
