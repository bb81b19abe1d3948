"""Reliability workloads and the measurements taken around them.

Shared by the fast tests (``tests/reliability``, part of ``make test``) and the long runs
of ``scripts/soak.py`` (``make soak``): the same code runs with small counts in the tests
and large ones in the soak.

Workloads (each an ``async def`` that runs in any run mode and checks its own outcome):

* :func:`sequential_cancellations` -- operations cancelled one after the other, by every
  cause (own timeout, ``cancel()``, a shared token, a parent, a condition, a signal, a
  ``CancellationError``, an enclosing scope, the registry);
* :func:`concurrent_operations` -- many operations alive at once, half cancelled through a
  shared token, half completing;
* :func:`source_cycles` -- repeated start/stop of every source (timeout, condition, signal,
  composite, all-of), reused and fresh objects, fired and not fired;
* :func:`long_condition` -- one condition checked thousands of times at a fast interval,
  measuring memory *during* the monitoring.

Leak measurement (:func:`measure_leaks`): a warm-up run, then ``rounds`` runs, each a full
event-loop life (``run_in_mode``), with ``gc.collect()`` before every snapshot. A snapshot
holds the live C instances (``_engine.live_objects()`` plus live ``CancellableCore``
objects), the number of gc-tracked objects, the traced Python memory (tracemalloc) and the
RSS. Invariants (robust, never wall-clock): C instances exactly back to the baseline; gc
objects, traced memory and RSS within generous margins that a leak of one object per
operation would still exceed.

The thread hammer (:func:`thread_hammer`) lives here too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import functools
import gc
import os
import random
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from hother.cancelable import (
    Cancellable,
    CancellationError,
    CancellationReason,
    CancellationToken,
    OperationRegistry,
    OperationStatus,
    _engine,
)
from hother.cancelable.backends import get_backend
from hother.cancelable.core.token import LinkedCancellationToken
from hother.cancelable.pytest_plugin import RUN_MODES, run_in_mode
from hother.cancelable.sources.composite import AllOfSource, CompositeSource
from hother.cancelable.sources.condition import ConditionSource
from hother.cancelable.sources.signal import SignalSource
from hother.cancelable.sources.timeout import TimeoutSource

__all__ = [
    "RUN_MODES",
    "HammerReport",
    "LeakReport",
    "Snapshot",
    "concurrent_operations",
    "engine_state",
    "engine_state_clean",
    "long_condition",
    "measure_leaks",
    "sequential_cancellations",
    "snapshot",
    "source_cycles",
    "thread_hammer",
]

Workload = Callable[..., Coroutine[Any, Any, Any]]

#: The signal the signal-source workloads use (never sent to the process otherwise).
TEST_SIGNAL = signal.SIGUSR1


# ------------------------------------------------------------------------------ snapshots


def _rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``; psutil elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - non-Linux
        import psutil  # type: ignore[import-untyped,unused-ignore]

        return int(psutil.Process().memory_info().rss)


def _live_cores() -> int:
    core = _engine.CancellableCore
    return sum(1 for o in gc.get_objects() if isinstance(o, core))


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Memory and instance counts at one point (taken after ``gc.collect()``)."""

    live: dict[str, int]
    gc_objects: int
    traced: int
    rss: int
    state: dict[str, int]

    def live_total(self) -> int:
        """Sum of all live C instances."""
        return sum(self.live.values())


def snapshot() -> Snapshot:
    """Collect garbage (three passes: finalizers may free more) and measure."""
    for _ in range(3):
        gc.collect()
    live = dict(_engine.live_objects())
    live["CancellableCore"] = _live_cores()
    traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
    return Snapshot(live, len(gc.get_objects()), traced, _rss_bytes(), engine_state())


def engine_state() -> dict[str, int]:
    """Sizes of the module-level state the engine and the library keep between runs."""
    from hother.cancelable.sources import base as source_base

    return {
        "task_scopes": len(_engine._task_scopes),
        "pending_hook_tasks": len(_engine._pending_hook_tasks),
        "signal_watchers": sum(len(w) for w in SignalSource._handlers.values()),
        "signal_installations": len(SignalSource._installations),
        "registry_active": len(OperationRegistry.get_instance()._operations),
        "source_runner_tasks": len(source_base._runner_tasks),
    }


def engine_state_clean() -> list[str]:
    """Module-level engine state that must be empty when nothing runs (absolute check)."""
    return [f"{k} = {v}" for k, v in engine_state().items() if v]


@dataclasses.dataclass
class LeakReport:
    """Result of :func:`measure_leaks` (figures printed by the soak)."""

    mode: str
    workload: str
    ops_per_round: int
    rounds: int
    baseline: Snapshot
    after: Snapshot
    results: list[Any]

    @property
    def gc_growth(self) -> int:
        """gc-tracked objects gained over the measured rounds."""
        return self.after.gc_objects - self.baseline.gc_objects

    @property
    def traced_growth(self) -> int:
        """Traced Python memory (bytes) gained over the measured rounds."""
        return self.after.traced - self.baseline.traced

    @property
    def rss_growth(self) -> int:
        """RSS (bytes) gained over the measured rounds."""
        return self.after.rss - self.baseline.rss

    def problems(self, *, gc_margin: int, traced_margin: int, rss_margin: int) -> list[str]:
        """Violated invariants (empty when the run is clean)."""
        out = []
        if self.after.live != self.baseline.live:
            out.append(f"live C instances {self.baseline.live} -> {self.after.live}")
        if self.gc_growth > gc_margin:
            out.append(f"gc objects grew by {self.gc_growth} (margin {gc_margin})")
        if self.traced_growth > traced_margin:
            out.append(f"traced memory grew by {self.traced_growth} B (margin {traced_margin})")
        if self.rss_growth > rss_margin:
            out.append(f"RSS grew by {self.rss_growth} B (margin {rss_margin})")
        grown = {
            k: (self.baseline.state[k], v)
            for k, v in self.after.state.items()
            if v > self.baseline.state[k]
        }
        if grown:
            out.append(f"engine state grew (before, after): {grown}")
        return out

    def line(self) -> str:
        """One human-readable line of figures."""
        mib = 1024 * 1024
        return (
            f"{self.workload:<26} {self.mode:<8} ops={self.ops_per_round}x{self.rounds:<3} "
            f"rss {self.baseline.rss / mib:7.1f} -> {self.after.rss / mib:7.1f} MiB  "
            f"traced {self.traced_growth / 1024:+8.1f} KiB  gc {self.gc_growth:+6d}  "
            f"C {self.after.live_total()}/{self.baseline.live_total()}"
        )


def measure_leaks(
    mode: str,
    workload: Workload,
    *,
    rounds: int,
    trace: bool = True,
    **kwargs: Any,
) -> LeakReport:
    """Run ``workload(**kwargs)`` once to warm up, then ``rounds`` times, and measure.

    Each run is a whole event-loop life in ``mode`` (``run_in_mode``). tracemalloc (when
    ``trace``) is started before the warm-up so that the baseline already contains the
    caches the first run fills.
    """
    started_tracing = False
    if trace and not tracemalloc.is_tracing():
        tracemalloc.start()
        started_tracing = True
    try:
        run_in_mode(mode, workload, **kwargs)
        baseline = snapshot()
        results = [run_in_mode(mode, workload, **kwargs) for _ in range(rounds)]
        after = snapshot()
    finally:
        if started_tracing:
            tracemalloc.stop()
    n = int(kwargs.get("n", 0))
    return LeakReport(mode, workload.__name__, n, rounds, baseline, after, results)


# ------------------------------------------------------------------------------ helpers


def _backend() -> Any:
    return get_backend()


async def _assert_engine_idle() -> None:
    """On the native asyncio backend: no scope, deadline or re-delivery left on this loop."""
    backend = get_backend()
    if backend.__class__.__name__ != "AsyncioBackend":
        return
    # a task that just left a cancelled scope is dropped from the re-delivery set by the
    # engine's coalesced callback, which runs once per loop iteration
    await backend.sleep(0)
    await backend.sleep(0)
    stats = _engine.loop_stats()
    assert stats["active_scopes"] == 0, stats
    assert stats["deadlines"] == 0, stats
    assert stats["pending_redelivery"] == 0, stats


@contextlib.contextmanager
def _history_limit(limit: int) -> Iterator[None]:
    registry = OperationRegistry.get_instance()
    old = registry._history_limit
    registry._history_limit = limit
    try:
        yield
    finally:
        registry._history_limit = old


# ------------------------------------------------------------------------------ workloads

#: The causes :func:`sequential_cancellations` cycles through, with the reason recorded.
CANCEL_KINDS: tuple[tuple[str, CancellationReason], ...] = (
    ("timeout", CancellationReason.TIMEOUT),
    ("cancel", CancellationReason.MANUAL),
    ("token", CancellationReason.SIGNAL),
    ("parent", CancellationReason.PARENT),
    ("error", CancellationReason.CONDITION),
    ("outer_scope", CancellationReason.MANUAL),
    ("registry", CancellationReason.MANUAL),
    ("condition", CancellationReason.CONDITION),
    ("signal", CancellationReason.SIGNAL),
)


async def _one_cancellation(kind: str, backend: Any, cancel_exc: type[BaseException]) -> Any:
    """Run one operation cancelled by ``kind``; return the operation."""
    if kind == "timeout":
        op: Any = Cancellable.with_timeout(1e-6)
        with contextlib.suppress(cancel_exc):
            async with op:
                await backend.sleep(30)
    elif kind == "cancel":
        op = Cancellable()
        with contextlib.suppress(cancel_exc):
            async with op:
                await op.cancel()
                await backend.sleep(30)
    elif kind == "token":
        token = CancellationToken()
        op = Cancellable.with_token(token)
        with contextlib.suppress(cancel_exc):
            async with op:
                token.cancel_sync(CancellationReason.SIGNAL, "stop")
                await backend.sleep(30)
    elif kind == "parent":
        parent = Cancellable(name="parent")
        with contextlib.suppress(cancel_exc):
            async with parent:
                op = Cancellable(parent=parent)
                async with op:
                    parent.cancel_sync()
                    await backend.sleep(30)
    elif kind == "error":
        op = Cancellable()
        with contextlib.suppress(CancellationError):
            async with op:
                raise CancellationError(CancellationReason.CONDITION, "raised")
    elif kind == "outer_scope":
        op = Cancellable()
        with backend.create_cancel_scope() as outer:
            async with op:
                outer.cancel()
                await backend.sleep(30)
    elif kind == "registry":
        op = Cancellable(register_globally=True)
        with contextlib.suppress(cancel_exc):
            async with op:
                assert OperationRegistry.get_instance().cancel_operation_sync(op.operation_id)
                await backend.sleep(30)
    elif kind == "condition":
        op = Cancellable.with_condition(lambda: True, check_interval=60)
        with contextlib.suppress(cancel_exc):
            async with op:
                await backend.sleep(30)
    elif kind == "signal":
        op = Cancellable.with_signal(TEST_SIGNAL)
        with contextlib.suppress(cancel_exc):
            async with op:
                os.kill(os.getpid(), TEST_SIGNAL)
                await backend.sleep(30)
    else:  # pragma: no cover
        raise ValueError(kind)
    return op


async def sequential_cancellations(n: int, kinds: tuple[str, ...] | None = None) -> int:
    """``n`` operations cancelled one after the other, cycling through :data:`CANCEL_KINDS`.

    Every operation must end CANCELLED with the reason of its cause. Returns ``n``.
    """
    backend = _backend()
    cancel_exc = backend.get_cancelled_exc_class()
    table = [(k, r) for k, r in CANCEL_KINDS if kinds is None or k in kinds]
    with _history_limit(5):  # saturated during the warm-up run: a constant size after
        for i in range(n):
            kind, reason = table[i % len(table)]
            op = await _one_cancellation(kind, backend, cancel_exc)
            if op.status != OperationStatus.CANCELLED or op.context.cancel_reason != reason:
                raise AssertionError(
                    f"operation {i} ({kind}): status {op.status}, reason "
                    f"{op.context.cancel_reason}, expected CANCELLED/{reason}"
                )
    await _assert_engine_idle()
    return n


async def concurrent_operations(n: int) -> tuple[int, int]:
    """``n`` operations alive at once; the odd ones are cancelled by one shared token, the
    even ones complete. Returns ``(completed, cancelled)``, which must be ``(n/2, n/2)``."""
    backend = _backend()
    cancel_exc = backend.get_cancelled_exc_class()
    shared = CancellationToken()
    all_in = backend.create_event()
    release = backend.create_event()
    entered = 0
    outcome = {"completed": 0, "cancelled": 0}

    async def one(i: int) -> None:
        nonlocal entered
        if i % 2:
            op = Cancellable.with_token(shared, name=f"op{i}")
        else:
            op = Cancellable.with_timeout(3600, name=f"op{i}")
        try:
            async with op:
                entered += 1
                if entered == n:
                    all_in.set()
                await release.wait()
                if i % 2:
                    await backend.sleep(3600)  # cancelled by the token
        except cancel_exc:
            pass
        key = "completed" if op.status == OperationStatus.COMPLETED else "cancelled"
        outcome[key] += 1

    async with backend.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
        await all_in.wait()
        release.set()
        shared.cancel_sync(CancellationReason.MANUAL, "bulk")
    result = (outcome["completed"], outcome["cancelled"])
    expected = (n - n // 2, n // 2)
    if result != expected:
        raise AssertionError(f"(completed, cancelled) = {result}, expected {expected}")
    await _assert_engine_idle()
    return result


def _make_sources(fire: bool) -> list[Any]:
    """One fresh source of every kind (firing at once when ``fire``)."""
    return [
        TimeoutSource(1e-6 if fire else 3600),
        ConditionSource(lambda: fire, check_interval=0.001),
        SignalSource(TEST_SIGNAL),
        CompositeSource([TimeoutSource(3600), ConditionSource(lambda: fire, 0.001)]),
        AllOfSource([ConditionSource(lambda: fire, 0.001), ConditionSource(lambda: fire, 0.001)]),
    ]


async def source_cycles(n: int) -> int:
    """``n`` rounds of start/stop of every source kind.

    Per round: the reused sources (one object per kind, serving operation after operation)
    are started and stopped without firing; fresh ones too; every 10th round fresh firing
    ones (a signal is sent for the signal source). After each stop the signal handler must be
    the original one again. Returns the number of start/stop cycles.
    """
    backend = _backend()
    cancel_exc = backend.get_cancelled_exc_class()
    original = signal.getsignal(TEST_SIGNAL)
    reused = _make_sources(False)
    cycles = 0
    for i in range(n):
        batches = [reused, _make_sources(False)]
        if i % 10 == 0:
            batches.append(_make_sources(True))
        for batch_no, batch in enumerate(batches):
            firing = batch_no == 2
            for source in batch:
                op = Cancellable().add_source(source)
                with contextlib.suppress(cancel_exc):
                    async with op:
                        if isinstance(source, SignalSource) and firing:
                            os.kill(os.getpid(), TEST_SIGNAL)
                        if firing:
                            await backend.sleep(30)
                        else:
                            await backend.sleep(0)
                cycles += 1
                expected = OperationStatus.CANCELLED if firing else OperationStatus.COMPLETED
                if op.status != expected:
                    raise AssertionError(
                        f"round {i}: {source!r} ended {op.status}, expected {expected}"
                    )
                if source.is_monitoring:
                    raise AssertionError(f"round {i}: {source!r} still monitoring after exit")
                if signal.getsignal(TEST_SIGNAL) != original:
                    raise AssertionError(f"round {i}: SIGUSR1 handler not restored by {source!r}")
    await _assert_engine_idle()
    return cycles


async def long_condition(n: int, interval: float = 0.0002) -> dict[str, int]:
    """One operation whose condition is checked ``n`` times at a fast ``interval``.

    Memory is sampled from inside the predicate, at check ``n // 5`` (after warm-up) and at
    the last check. Returns the figures; the caller checks the growth.
    """
    backend = _backend()
    cancel_exc = backend.get_cancelled_exc_class()
    samples: dict[str, int] = {}
    count = 0
    warm = max(1, n // 5)

    def sample(prefix: str) -> None:
        gc.collect()
        samples[f"{prefix}_gc"] = len(gc.get_objects())
        samples[f"{prefix}_traced"] = (
            tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
        )
        samples[f"{prefix}_rss"] = _rss_bytes()

    def condition() -> bool:
        nonlocal count
        count += 1
        if count == warm:
            sample("warm")
        if count >= n:
            sample("end")
            return True
        return False

    op = Cancellable.with_condition(condition, check_interval=interval)
    with contextlib.suppress(cancel_exc):
        async with op:
            await backend.sleep(3600)
    if op.context.cancel_reason != CancellationReason.CONDITION or count != n:
        raise AssertionError(f"condition: reason {op.context.cancel_reason}, {count} checks")
    samples["checks"] = count
    await _assert_engine_idle()
    return samples


# ------------------------------------------------------------------------------ thread hammer


@dataclasses.dataclass
class HammerReport:
    """What one :func:`thread_hammer` run did and saw."""

    loops: tuple[str, ...]
    rounds: int
    tokens: int
    thread_ops: int = 0
    wins: int = 0
    links: int = 0
    callbacks_registered: int = 0
    callbacks_run: int = 0
    waiters_woken: int = 0
    operations_cancelled: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)

    def line(self) -> str:
        """One human-readable line of figures."""
        return (
            f"hammer {'+'.join(self.loops):<14} rounds={self.rounds} tokens={self.tokens} "
            f"thread_ops={self.thread_ops} wins={self.wins} links={self.links} "
            f"callbacks {self.callbacks_run}/{self.callbacks_registered} "
            f"waiters={self.waiters_woken} ops_cancelled={self.operations_cancelled} "
            f"errors={len(self.errors)}"
        )


class _Counter:
    """Thread-safe callback counter: ``hit(key)`` per callback run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[int, int] = {}
        self.next = 0

    def new(self) -> int:
        with self.lock:
            self.next += 1
            self.counts[self.next] = 0
            return self.next

    def hit(self, key: int) -> None:
        with self.lock:
            self.counts[key] += 1


def _drop_token(fn: Callable[[int], Any], key: int, _token: Any) -> Any:
    """``fn(key)`` as a token callback (the token argument is dropped)."""
    return fn(key)


def _dump_threads() -> str:
    with tempfile.TemporaryFile("w+") as f:
        faulthandler.dump_traceback(f, all_threads=True)
        f.seek(0)
        return f.read()


_REASONS = (
    CancellationReason.MANUAL,
    CancellationReason.SIGNAL,
    CancellationReason.CONDITION,
    CancellationReason.TIMEOUT,
)


def _hammer_round(
    loops: tuple[str, ...],
    n_tokens: int,
    n_threads: int,
    ops_per_thread: int,
    join_timeout: float,
    seed: int,
    report: HammerReport,
) -> None:
    counter = _Counter()
    tokens = [LinkedCancellationToken() for _ in range(n_tokens)]
    sentinel_hits = [0] * n_tokens
    sentinel_lock = threading.Lock()

    # one plain-thread sentinel per token: must run exactly once, in the cancelling thread
    def make_sentinel(i: int) -> Callable[[Any], None]:
        def sentinel(_tok: Any) -> None:
            with sentinel_lock:
                sentinel_hits[i] += 1

        return sentinel

    for i, tok in enumerate(tokens):
        tok.register_callback_sync(make_sentinel(i))

    operations: list[Any] = []
    ops_lock = threading.Lock()
    ready = [threading.Event() for _ in loops]
    loop_errors: list[str] = []

    async def loop_main(index: int) -> tuple[int, int, int]:
        backend = get_backend()
        cancel_exc = backend.get_cancelled_exc_class()
        woken = 0
        cancelled = 0
        expected_callbacks = 0
        ran = 0
        all_ran = backend.create_event()

        async def async_cb(key: int) -> None:
            nonlocal ran
            await backend.sleep(0)
            counter.hit(key)
            ran += 1
            if ran == expected_callbacks:
                all_ran.set()

        async def waiter(tok: Any) -> None:
            nonlocal woken
            await tok.wait_for_cancel()
            woken += 1

        async def operation(tok: Any) -> None:
            nonlocal cancelled
            op = Cancellable.with_token(tok, name=f"loop{index}")
            with ops_lock:
                operations.append(op)
            try:
                async with op:
                    await backend.sleep(3600)
            except cancel_exc:
                pass
            if op.status == OperationStatus.CANCELLED:
                cancelled += 1
            else:
                loop_errors.append(f"loop {index}: operation ended {op.status}")

        async with backend.create_task_group() as tg:
            for tok in tokens:
                key = counter.new()
                expected_callbacks += 1
                await tok.register_callback(functools.partial(_drop_token, async_cb, key))
                tg.start_soon(waiter, tok)
                tg.start_soon(operation, tok)
            await backend.sleep(0)
            ready[index].set()
        if expected_callbacks and ran < expected_callbacks:
            await all_ran.wait()
        await _assert_engine_idle()
        return woken, cancelled, ran

    results: list[Any] = [None] * len(loops)

    def loop_thread(index: int, mode: str) -> None:
        try:
            results[index] = run_in_mode(mode, loop_main, index=index)
        except BaseException as exc:  # reported by the main thread
            loop_errors.append(f"loop {index} ({mode}): {exc!r}")
            ready[index].set()

    loop_threads = [
        threading.Thread(target=loop_thread, args=(i, m), daemon=True, name=f"hammer-loop-{m}")
        for i, m in enumerate(loops)
    ]
    for t in loop_threads:
        t.start()
    for ev in ready:
        if not ev.wait(join_timeout):
            raise AssertionError("event loops did not get ready\n" + _dump_threads())
    if loop_errors:
        raise AssertionError("; ".join(loop_errors))

    barrier = threading.Barrier(n_threads)
    thread_errors: list[str] = []
    stats_lock = threading.Lock()

    def hammer(t_index: int) -> None:
        rng = random.Random(seed * 1000 + t_index)
        wins = links = registered = ops = 0
        # about one cancellation attempt per token over the whole run, spread over time,
        # so that linking and registering race with live tokens as well as cancelled ones
        p_cancel = min(0.2, n_tokens / (n_threads * ops_per_thread))
        p_link = min(0.2, 2 * n_tokens / (n_threads * ops_per_thread))
        try:
            barrier.wait(join_timeout)
            for _ in range(ops_per_thread):
                tok = rng.choice(tokens)
                action = rng.random()
                ops += 1
                if action < p_cancel:
                    if tok.cancel_sync(rng.choice(_REASONS), f"t{t_index}"):
                        wins += 1
                elif action < p_cancel + p_link:
                    other = rng.choice(tokens)
                    if other is not tok:
                        tok.link_sync(other, preserve_reason=rng.random() < 0.5)
                        links += 1
                elif action < p_cancel + p_link + 0.2:
                    key = counter.new()
                    tok.register_callback_sync(functools.partial(_drop_token, counter.hit, key))
                    registered += 1
                elif action < p_cancel * 1.5 + p_link + 0.2:
                    with ops_lock:
                        op = rng.choice(operations) if operations else None
                    if op is not None:
                        op.cancel_sync(CancellationReason.MANUAL, f"op by t{t_index}")
                else:
                    was = tok.is_cancelled
                    try:
                        tok.check()
                    except CancellationError:
                        if not tok.is_cancelled:
                            thread_errors.append("check() raised on a live token")
                    else:
                        if was:
                            thread_errors.append("check() silent on a cancelled token")
        except BaseException as exc:
            thread_errors.append(f"hammer thread {t_index}: {exc!r}")
        with stats_lock:
            report.thread_ops += ops
            report.wins += wins
            report.links += links
            report.callbacks_registered += registered

    threads = [
        threading.Thread(target=hammer, args=(i,), daemon=True, name=f"hammer-{i}")
        for i in range(n_threads)
    ]
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + join_timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in threads):
            raise AssertionError("hammer threads deadlocked\n" + _dump_threads())
    finally:
        sys.setswitchinterval(old_interval)
    # whatever the threads left live is cancelled now: every waiter must wake
    for tok in tokens:
        if tok.cancel_sync(CancellationReason.MANUAL, "final"):
            report.wins += 1
    deadline = time.monotonic() + join_timeout
    for t in loop_threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in loop_threads):
        raise AssertionError("event loops did not finish (lost wake-up?)\n" + _dump_threads())
    errors = thread_errors + loop_errors
    for i, hits in enumerate(sentinel_hits):
        if hits != 1:
            errors.append(f"token {i}: sentinel callback ran {hits} times")
    for key, hits in counter.counts.items():
        if hits != 1:
            errors.append(f"callback {key} ran {hits} times")
    report.callbacks_registered += len(tokens) * len(loops)
    report.callbacks_run += sum(counter.counts.values())
    for res in results:
        if res is not None:
            woken, cancelled, _ran = res
            report.waiters_woken += woken
            report.operations_cancelled += cancelled
            if woken != n_tokens or cancelled != n_tokens:
                errors.append(f"a loop woke {woken} waiters / cancelled {cancelled} ops")
    report.errors.extend(errors)


def thread_hammer(
    *,
    loops: tuple[str, ...] = ("asyncio", "trio"),
    rounds: int = 2,
    tokens: int = 48,
    threads: int = 16,
    ops_per_thread: int = 400,
    join_timeout: float = 30.0,
    seed: int = 0,
) -> HammerReport:
    """``threads`` plain threads cancel, link, check and register callbacks on shared tokens
    while tasks on one event loop per entry of ``loops`` (each in its own thread) wait on
    them (``wait_for_cancel``, ``Cancellable.with_token``, async callbacks).

    Checked: every callback runs exactly once, every waiter wakes, every operation ends
    CANCELLED, no thread is stuck (bounded joins: a deadlock fails with the stacks of every
    thread instead of hanging). Violations are listed in ``report.errors``.
    """
    report = HammerReport(loops, rounds, tokens)
    for r in range(rounds):
        _hammer_round(loops, tokens, threads, ops_per_thread, join_timeout, seed + r, report)
    return report
