"""The documented custom-source example (examples/custom_source.py) works on every backend."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hother.cancelable.core.models import CancellationReason

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "custom_source.py"


def _load() -> ModuleType:
    name = "hother_examples_custom_source"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, EXAMPLE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


example = _load()


def test_validation() -> None:
    with pytest.raises(ValueError, match="check_interval"):
        example.StopFileSource("x", 0)


async def test_stop_file_source_on_a_bare_scope(
    backend: Any, recorder: Any, tmp_path: Path
) -> None:
    flag = tmp_path / "stop"
    src = example.StopFileSource(flag, 0.01)
    src.set_cancel_callback(recorder)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    with scope:
        await backend.sleep(0.03)
        assert not scope.cancel_called
        flag.touch()
        await backend.sleep(10)
    await src.stop_monitoring()
    assert scope.cancelled_caught and src.triggered
    assert recorder.calls == [(CancellationReason.CONDITION, f"Stop file {flag} appeared")]


async def test_stop_file_source_stops_cleanly_when_nothing_happens(
    backend: Any, tmp_path: Path
) -> None:
    src = example.StopFileSource(tmp_path / "never", 0.01)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    with scope:
        await backend.sleep(0.03)
    await src.stop_monitoring()
    assert not scope.cancelled_caught and not src.triggered
    await backend.sleep(0.01)  # host task healthy


async def test_demos_with_cancellable(tmp_path: Path) -> None:
    op = await example.demo_stop_file(tmp_path)
    assert op.is_cancelled
    assert op.context.cancel_reason is CancellationReason.CONDITION
    assert op.context.cancel_message == f"Stop file {tmp_path / 'stop'} appeared"

    op = await example.demo_budget()
    assert op.is_cancelled
    assert op.context.cancel_reason is CancellationReason.MANUAL
    assert op.context.cancel_message == "Budget of 10 exceeded (12.0)"


async def test_main_runs(capsys: pytest.CaptureFixture[str]) -> None:
    await example.main()
    out = capsys.readouterr().out
    assert "until_stop_file: cancelled, reason=condition" in out
    assert "budgeted: cancelled, reason=manual" in out
