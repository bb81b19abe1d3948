"""The package namespace and its import-time behaviour (API.md §1, §2; defects §14.25, §14.27).

* ``__all__`` has the 18 names of the 0.1 API plus the backend exports;
* ``__version__`` is a version string;
* importing the package adds only a ``NullHandler`` to the ``hother.cancelable`` logger and
  does not touch the root logger;
* importing the package imports none of the optional / heavy libraries (checked in a fresh
  interpreter, since this test process has loaded them already).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import hother.cancelable as pkg

API_NAMES = {
    "OperationStatus",
    "CancellationReason",
    "OperationContext",
    "CancellationToken",
    "Cancellable",
    "OperationRegistry",
    "current_operation",
    "CancellationError",
    "TimeoutCancellation",
    "ManualCancellation",
    "SignalCancellation",
    "ConditionCancellation",
    "ParentCancellation",
    "cancellable",
    "with_timeout",
    "cancellable_stream",
    "AnyioBridge",
    "call_soon_threadsafe",
}

BACKEND_NAMES = {
    "get_backend",
    "detect_backend",
    "BackendType",
    "use_backend",
    "BackendDetectionError",
    "NoAsyncContextError",
    "UnsupportedBackendError",
}

HEAVY_MODULES = ("fastapi", "starlette", "httpx", "sqlalchemy", "psutil", "trio", "uvloop")


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (same environment) and return its stdout."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_api_names_in_all() -> None:
    assert len(API_NAMES) == 18
    missing = API_NAMES - set(pkg.__all__)
    assert not missing, f"missing from __all__: {sorted(missing)}"


def test_backend_names_in_all() -> None:
    missing = BACKEND_NAMES - set(pkg.__all__)
    assert not missing, f"missing from __all__: {sorted(missing)}"


def test_all_names_resolve_and_are_unique() -> None:
    assert len(pkg.__all__) == len(set(pkg.__all__))
    for name in pkg.__all__:
        assert hasattr(pkg, name), name


def test_exported_objects_are_the_module_objects() -> None:
    from hother.cancelable.backends import detection
    from hother.cancelable.core import cancellable, exceptions, models, registry, token

    assert pkg.Cancellable is cancellable.Cancellable
    assert pkg.current_operation is cancellable.current_operation
    assert pkg.CancellationToken is token.CancellationToken
    assert pkg.OperationRegistry is registry.OperationRegistry
    assert pkg.OperationStatus is models.OperationStatus
    assert pkg.CancellationReason is models.CancellationReason
    assert pkg.OperationContext is models.OperationContext
    assert pkg.CancellationError is exceptions.CancellationError
    assert pkg.detect_backend is detection.detect_backend
    assert pkg.use_backend is detection.use_backend
    for cls in (
        pkg.TimeoutCancellation,
        pkg.ManualCancellation,
        pkg.SignalCancellation,
        pkg.ConditionCancellation,
        pkg.ParentCancellation,
    ):
        assert issubclass(cls, pkg.CancellationError)
    assert issubclass(pkg.NoAsyncContextError, pkg.BackendDetectionError)
    assert issubclass(pkg.UnsupportedBackendError, pkg.BackendDetectionError)


def test_with_timeout_export_is_the_coroutine_helper() -> None:
    import inspect

    assert inspect.iscoroutinefunction(pkg.with_timeout)
    helper: object = pkg.with_timeout
    assert helper is not pkg.Cancellable.with_timeout


def test_extra_top_level_names() -> None:
    assert callable(vars(pkg)["configure_logging"])
    assert "configure_logging" not in pkg.__all__
    assert "__version__" not in pkg.__all__


def test_version() -> None:
    version = pkg.__version__
    assert isinstance(version, str)
    assert version
    assert version[0].isdigit()


def test_import_touches_only_the_library_logger() -> None:
    out = run_python(
        """
        import json, logging
        root = logging.getLogger()
        before = (list(root.handlers), root.level, root.propagate)
        lib_before = list(logging.getLogger("hother.cancelable").handlers)
        import hother.cancelable
        import hother.cancelable  # a second import changes nothing
        after = (list(root.handlers), root.level, root.propagate)
        lib = logging.getLogger("hother.cancelable")
        print(json.dumps({
            "root_unchanged": before == after,
            "lib_before": len(lib_before),
            "lib_handlers": [type(h).__name__ for h in lib.handlers],
            "lib_level": lib.level,
            "lib_propagate": lib.propagate,
        }))
        """
    )
    data = json.loads(out)
    assert data["root_unchanged"] is True
    assert data["lib_before"] == 0
    assert data["lib_handlers"] == ["NullHandler"]
    assert data["lib_level"] == 0  # NOTSET: the application decides
    assert data["lib_propagate"] is True


def test_import_does_not_import_heavy_libraries() -> None:
    out = run_python(
        f"""
        import json, sys
        import hother.cancelable
        from hother.cancelable import Cancellable, CancellationToken
        Cancellable.with_timeout(1.0)
        print(json.dumps([m for m in {list(HEAVY_MODULES)!r} if m in sys.modules]))
        """
    )
    assert json.loads(out) == []


def test_asyncio_usage_does_not_import_heavy_libraries() -> None:
    out = run_python(
        f"""
        import asyncio, json, sys
        from hother.cancelable import Cancellable

        async def main():
            try:
                async with Cancellable.with_timeout(0.01):
                    await asyncio.sleep(1)
            except asyncio.CancelledError:
                pass
            async with Cancellable():
                await asyncio.sleep(0)

        asyncio.run(main())
        print(json.dumps([m for m in {list(HEAVY_MODULES)!r} if m in sys.modules]))
        """
    )
    assert json.loads(out) == []


@pytest.mark.parametrize(
    "name",
    [
        "LinkedCancellationToken",
        "TimeoutSource",
        "ConditionSource",
        "ContextBridge",
        "cancellable_method",
    ],
)
def test_module_level_names_not_in_all(name: str) -> None:
    assert name not in pkg.__all__
