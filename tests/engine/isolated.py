"""Run Python code in a fresh interpreter that uses the very engine this test run uses.

Some engine states can only be reached in a fresh process (before ``_set_classes`` or
``_set_reason_type`` ran, with a fake ``trio`` module, without asyncio's current-task dict, or
while allocations fail): :func:`run_python` runs a snippet there. The child imports
``hother.cancelable._engine`` from the same file as the parent (``_engine.__file__``, which is
the instrumented build under ``make coverage``), also when it is loaded bare, without the
package, through :func:`load_engine` of the prelude.

``FULL_SWEEP`` (environment ``HOTHER_ENGINE_FULL_SWEEP=1``, set by ``make coverage``) selects
the exhaustive allocation-failure sweeps; by default they sample the range.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from hother.cancelable import _engine

ENGINE_SO = str(Path(_engine.__file__ or "").resolve())
FULL_SWEEP = os.environ.get("HOTHER_ENGINE_FULL_SWEEP", "") not in ("", "0")
HERE = Path(__file__).resolve().parent

PRELUDE = '''
import importlib.abc, importlib.util, os, sys
_SO = os.environ["HOTHER_ENGINE_SO"]

class _EngineFromParent(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "hother.cancelable._engine":
            return importlib.util.spec_from_file_location(fullname, _SO)
        return None

sys.meta_path.insert(0, _EngineFromParent())

def load_engine():
    """The engine module alone (the package is not imported, nothing is handed over)."""
    spec = importlib.util.spec_from_file_location("hother.cancelable._engine", _SO)
    module = importlib.util.module_from_spec(spec)
    sys.modules["hother.cancelable._engine"] = module
    return module

def engine_classes():
    """The dict the package hands to _engine._set_classes() (captured, not applied)."""
    import hother.cancelable.core.cancellable as cc
    captured = {}
    real = cc._engine._set_classes
    cc._engine._set_classes = captured.update
    try:
        cc._hand_over_to_engine()
    finally:
        cc._engine._set_classes = real
    return captured
'''


def run_python(code: str, *, timeout: float = 120, args: tuple[str, ...] = ()) -> str:
    """Run ``code`` (dedented, after the prelude) in a fresh interpreter; return its stdout.

    Fails (AssertionError with the child's output) when the child exits non-zero or dies.
    """
    env = dict(os.environ)
    env["HOTHER_ENGINE_SO"] = ENGINE_SO
    env.pop("HOTHER_CANCELABLE_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(HERE.parent.parent),
    )
    assert proc.returncode == 0, (
        f"child exited with {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc.stdout


def run_script(script: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a helper script of this directory in a fresh interpreter (same engine file)."""
    env = dict(os.environ)
    env["HOTHER_ENGINE_SO"] = ENGINE_SO
    env.pop("HOTHER_CANCELABLE_BACKEND", None)
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(HERE.parent.parent),
    )
