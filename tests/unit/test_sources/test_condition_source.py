"""ConditionSource and ResourceConditionSource (§8.3, §13.8, §14.22)."""

from __future__ import annotations

import builtins
import functools
import logging
import math
import sys
import threading
import types
from typing import Any

import pytest

from hother.cancelable.core.models import CancellationReason
from hother.cancelable.sources.condition import ConditionSource, ResourceConditionSource


def never() -> bool:
    return False


def test_attributes_and_defaults() -> None:
    src = ConditionSource(never, 0.5)
    assert src.condition is never
    assert src.check_interval == 0.5
    assert src.condition_name == "never"
    assert src.reason is CancellationReason.CONDITION
    assert src.triggered is False
    assert src.run_in_thread is False
    assert src.name == "ConditionSource"
    assert ConditionSource(lambda: False).condition_name == "<lambda>"
    assert ConditionSource(functools.partial(never)).condition_name == "condition"
    named = ConditionSource(never, condition_name="disk full", name="watch", run_in_thread=True)
    assert (named.condition_name, named.name, named.run_in_thread) == ("disk full", "watch", True)
    assert ConditionSource(never).check_interval == 0.1


@pytest.mark.parametrize("bad", [0, -1, -0.01, float("nan")])
def test_bad_interval_is_a_value_error(bad: float) -> None:
    with pytest.raises(ValueError, match="check_interval"):
        ConditionSource(never, bad)


@pytest.mark.parametrize("bad", ["1", None, True])
def test_non_number_interval_is_a_type_error(bad: Any) -> None:
    with pytest.raises(TypeError, match="check_interval"):
        ConditionSource(never, bad)


def test_other_bad_arguments() -> None:
    with pytest.raises(TypeError, match="condition must be callable"):
        ConditionSource(True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="condition_name"):
        ConditionSource(never, condition_name=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="run_in_thread"):
        ConditionSource(never, run_in_thread=1)  # type: ignore[arg-type]


def _counter(fire_at: int) -> tuple[list[int], Any]:
    calls: list[int] = []

    def condition() -> bool:
        calls.append(threading.get_ident())
        return len(calls) >= fire_at

    return calls, condition


async def test_sync_condition_fires_on_the_third_check(backend: Any, recorder: Any) -> None:
    calls, condition = _counter(3)
    src = ConditionSource(condition, 0.05, condition_name="third")
    src.set_cancel_callback(recorder)
    scope = backend.create_cancel_scope()
    start = backend.current_time()
    await src.start_monitoring(scope)
    with scope:
        await backend.sleep(10)
    elapsed = backend.current_time() - start
    await src.stop_monitoring()
    assert scope.cancelled_caught
    assert len(calls) == 3
    assert src.check_count == 3
    assert src.triggered
    assert 0.08 <= elapsed < 5  # first check immediate, then two intervals
    assert recorder.calls == [
        (CancellationReason.CONDITION, "Condition 'third' met after 3 checks")
    ]
    # sync predicates run in the event loop thread by default
    assert set(calls) == {threading.get_ident()}


async def test_run_in_thread_uses_a_worker_thread(backend: Any) -> None:
    calls, condition = _counter(2)
    src = ConditionSource(condition, 0.01, run_in_thread=True)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    with scope:
        await backend.sleep(10)
    await src.stop_monitoring()
    assert scope.cancelled_caught
    assert len(calls) == 2
    assert threading.get_ident() not in calls


async def test_async_function_condition(backend: Any, recorder: Any) -> None:
    calls: list[int] = []

    async def ready() -> bool:
        await backend.sleep(0)
        calls.append(1)
        return len(calls) >= 3

    src = ConditionSource(ready, 0.01)
    src.set_cancel_callback(recorder)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    with scope:
        await backend.sleep(10)
    await src.stop_monitoring()
    assert scope.cancelled_caught and len(calls) == 3
    assert recorder.calls[0][1] == "Condition 'ready' met after 3 checks"


async def test_async_callable_object_and_partial_are_awaited(backend: Any) -> None:
    """§14.22: not classified by iscoroutinefunction; a returned coroutine is awaited."""

    class Checker:
        def __init__(self) -> None:
            self.calls = 0

        async def __call__(self) -> bool:
            self.calls += 1
            return self.calls >= 2

    async def over(limit: int, box: list[int]) -> bool:
        box.append(1)
        return len(box) >= limit

    checker = Checker()
    box: list[int] = []
    for condition in (checker, functools.partial(over, 2, box)):
        src = ConditionSource(condition, 0.01)
        scope = backend.create_cancel_scope()
        await src.start_monitoring(scope)
        with scope:
            await backend.sleep(10)
        await src.stop_monitoring()
        assert scope.cancelled_caught
        assert src.check_count == 2  # not an immediate trigger on a truthy coroutine
    assert checker.calls == 2 and len(box) == 2


async def test_async_condition_with_run_in_thread(backend: Any) -> None:
    async def yes() -> bool:
        return True

    src = ConditionSource(yes, 0.01, run_in_thread=True)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    with scope:
        await backend.sleep(10)
    await src.stop_monitoring()
    assert scope.cancelled_caught and src.check_count == 1


async def test_truthy_non_bool_results_count(backend: Any) -> None:
    src = ConditionSource(lambda: [1], 0.01)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    with scope:
        await backend.sleep(10)
    await src.stop_monitoring()
    assert scope.cancelled_caught


async def test_raising_condition_stops_checking_reports_and_does_not_cancel(
    backend: Any, recorder: Any, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def broken() -> bool:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("sensor unplugged")
        return False

    src = ConditionSource(broken, 0.01, name="sensor")
    src.set_cancel_callback(recorder)
    src.set_error_callback(recorder.on_error)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    with caplog.at_level(logging.ERROR, logger="hother.cancelable"), scope:
        for _ in range(200):
            if recorder.errors:
                break
            await backend.sleep(0.01)
        await backend.sleep(0.05)  # several intervals: no more checks happen
    await src.stop_monitoring()
    assert not scope.cancel_called  # the operation was not cancelled
    assert recorder.calls == []
    assert len(calls) == 2 and src.check_count == 2
    assert isinstance(src.error, OSError)
    assert recorder.errors == [(src, src.error)]
    assert not src.triggered
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and getattr(errors[0], "source", None) == "sensor"


async def test_raising_async_condition_without_error_callback(backend: Any) -> None:
    async def broken() -> bool:
        raise ValueError("bad predicate")

    src = ConditionSource(broken, 0.01)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    with scope:
        for _ in range(200):
            if src.error is not None:
                break
            await backend.sleep(0.01)
    await src.stop_monitoring()
    assert isinstance(src.error, ValueError) and not scope.cancel_called


async def test_stop_ends_checking(backend: Any) -> None:
    calls, condition = _counter(10**9)
    src = ConditionSource(condition, 0.01)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    with scope:
        await backend.sleep(0.05)
    await src.stop_monitoring()
    seen = len(calls)
    assert seen >= 1
    await backend.sleep(0.05)
    assert len(calls) == seen
    assert not scope.cancelled_caught and not src.triggered


async def test_stop_does_not_wait_for_a_hanging_async_condition(backend: Any) -> None:
    async def hangs() -> bool:
        await backend.sleep(math.inf)
        return True

    src = ConditionSource(hangs, 0.01)
    await src.start_monitoring(backend.create_cancel_scope())
    await backend.sleep(0.02)  # the check is now hanging
    start = backend.current_time()
    with backend.create_cancel_scope(deadline=start + 10) as guard:
        await src.stop_monitoring()
    assert not guard.cancel_called
    assert backend.current_time() - start < 5


async def test_never_true_condition_lets_the_body_complete(backend: Any) -> None:
    src = ConditionSource(never, 0.01)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    with scope:
        await backend.sleep(0.05)
        done = True
    await src.stop_monitoring()
    assert done and not scope.cancelled_caught
    assert src.check_count >= 2


async def test_reusable_after_stop(backend: Any) -> None:
    _calls, condition = _counter(1)
    src = ConditionSource(condition, 0.01)
    for _ in range(2):
        scope = backend.create_cancel_scope()
        await src.start_monitoring(scope)
        with scope:
            await backend.sleep(10)
        await src.stop_monitoring()
        assert scope.cancelled_caught and src.check_count == 1 and src.triggered


# --------------------------------------------------------------------- resources


def test_resource_source_attributes() -> None:
    src = ResourceConditionSource(memory_threshold=80, cpu_threshold=90.5, check_interval=2.0)
    assert src.memory_threshold == 80
    assert src.cpu_threshold == 90.5
    assert src.disk_threshold is None
    assert src.check_interval == 2.0
    assert src.name == "resource_monitor"
    assert src.reason is CancellationReason.CONDITION
    assert src.condition_name == "resource_check(memory>80%, cpu>90.5%)"
    assert ResourceConditionSource().check_interval == 5.0
    assert "resource_check" in ResourceConditionSource(disk_threshold=99).condition_name


@pytest.mark.parametrize("field", ["memory_threshold", "cpu_threshold", "disk_threshold"])
@pytest.mark.parametrize("bad", [0, -5, 100.5, 150, float("nan")])
def test_resource_threshold_range(field: str, bad: float) -> None:
    with pytest.raises(ValueError, match=field):
        ResourceConditionSource(**{field: bad})


@pytest.mark.parametrize("field", ["memory_threshold", "cpu_threshold", "disk_threshold"])
def test_resource_threshold_type(field: str) -> None:
    with pytest.raises(TypeError, match=field):
        ResourceConditionSource(**{field: "90"})


async def test_check_resources_without_psutil(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "psutil":
            raise ImportError("No module named 'psutil'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    src = ResourceConditionSource(memory_threshold=1)
    with caplog.at_level(logging.WARNING, logger="hother.cancelable"):
        assert await src._check_resources() is False
        assert await src._check_resources() is False
    warnings = [r for r in caplog.records if "psutil" in r.getMessage()]
    assert len(warnings) == 1  # warned once, not at every check


def _fake_psutil(memory: float, cpu: float, disk: float) -> Any:
    calls: list[Any] = []
    module = types.ModuleType("psutil")

    def cpu_percent(interval: Any = "missing") -> float:
        calls.append(("cpu", interval))
        return cpu

    module.virtual_memory = lambda: types.SimpleNamespace(percent=memory)  # type: ignore[attr-defined]
    module.cpu_percent = cpu_percent  # type: ignore[attr-defined]
    module.disk_usage = lambda path: types.SimpleNamespace(percent=disk)  # type: ignore[attr-defined]
    module.calls = calls  # type: ignore[attr-defined]
    return module


async def test_check_resources_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_psutil(memory=50, cpu=70, disk=95)
    monkeypatch.setitem(sys.modules, "psutil", fake)
    assert await ResourceConditionSource(memory_threshold=40)._check_resources() is True
    assert await ResourceConditionSource(memory_threshold=60)._check_resources() is False
    assert await ResourceConditionSource(cpu_threshold=60)._check_resources() is True
    assert await ResourceConditionSource(disk_threshold=90)._check_resources() is True
    assert (
        await ResourceConditionSource(memory_threshold=60, cpu_threshold=80)._check_resources()
        is False
    )
    # the CPU is measured without blocking: interval=None
    assert all(interval is None for what, interval in fake.calls if what == "cpu")


async def test_resource_source_fires(
    backend: Any, recorder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psutil", _fake_psutil(memory=97, cpu=1, disk=1))
    src = ResourceConditionSource(memory_threshold=90, check_interval=0.01)
    src.set_cancel_callback(recorder)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    with scope:
        await backend.sleep(10)
    await src.stop_monitoring()
    assert scope.cancelled_caught
    assert recorder.calls == [
        (CancellationReason.CONDITION, "Condition 'resource_check(memory>90%)' met after 1 checks")
    ]


async def test_resource_source_with_real_psutil_does_not_fire_at_100(backend: Any) -> None:
    src = ResourceConditionSource(memory_threshold=100, cpu_threshold=100, disk_threshold=100)
    assert await src._check_resources() is False
