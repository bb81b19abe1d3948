"""pytest plugin of hother.cancelable: run every async test in every run mode.

Registered through the ``pytest11`` entry point, so installing the package enables it.

Run modes (the mode shows in the test id, e.g. ``test_x[trio]``):

* ``asyncio``: a plain asyncio event loop, native asyncio backend;
* ``uvloop``: asyncio with uvloop's loop, native asyncio backend;
* ``anyio``: asyncio underneath, the anyio backend forced with ``use_backend("anyio")``;
* ``trio``: ``trio.run``; sniffio reports trio, so the anyio backend is detected.

Every ``async def`` test that no other plugin claims (``@pytest.mark.anyio`` /
``@pytest.mark.asyncio`` tests are left to anyio's and pytest-asyncio's plugins) is run in
all four modes. ``@pytest.mark.modes("asyncio", "uvloop", reason="...")`` restricts a test:
the other modes are still generated and reported as skipped with that reason.

Fixtures: ``run_mode`` (the mode name), ``backend_type`` (``"asyncio"`` or ``"anyio"``)
and ``backend`` (the :class:`~hother.cancelable.backends.base.AsyncBackend` instance).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

RUN_MODES: tuple[str, ...] = ("asyncio", "uvloop", "anyio", "trio")
_BACKEND_OF_MODE = {"asyncio": "asyncio", "uvloop": "asyncio", "anyio": "anyio", "trio": "anyio"}
_PARAM = "run_mode"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "modes(*names, reason=...): run this async test only in the named run modes "
        "(the others are reported as skipped with the reason)",
    )


def _claimed_by_other_plugin(definition: Any) -> bool:
    return any(definition.get_closest_marker(m) is not None for m in ("anyio", "asyncio", "trio"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not inspect.iscoroutinefunction(metafunc.function):
        return
    if _claimed_by_other_plugin(metafunc.definition):
        return
    if _PARAM in metafunc.fixturenames and any(
        _PARAM in getattr(c, "params", {}) for c in getattr(metafunc, "_calls", [])
    ):
        return
    marker = metafunc.definition.get_closest_marker("modes")
    allowed = tuple(marker.args) if marker is not None and marker.args else RUN_MODES
    for name in allowed:
        if name not in RUN_MODES:
            raise pytest.UsageError(
                f"unknown run mode {name!r} in @pytest.mark.modes; use {RUN_MODES}"
            )
    reason = marker.kwargs.get("reason", "") if marker is not None else ""
    params = []
    for mode in RUN_MODES:
        marks: list[Any] = []
        if mode not in allowed:
            why = reason or "restricted by @pytest.mark.modes"
            marks.append(pytest.mark.skip(reason=f"not run in mode {mode}: {why}"))
        params.append(pytest.param(mode, id=mode, marks=marks))
    if _PARAM not in metafunc.fixturenames:
        metafunc.fixturenames.append(_PARAM)
    metafunc.parametrize(_PARAM, params)


@pytest.fixture
def run_mode(request: pytest.FixtureRequest) -> str:
    """The run mode of the current test (``asyncio``, ``uvloop``, ``anyio`` or ``trio``)."""
    return str(getattr(request, "param", "asyncio"))


@pytest.fixture
def backend_type(run_mode: str) -> str:
    """The backend our library uses in this run mode: ``"asyncio"`` or ``"anyio"``."""
    return _BACKEND_OF_MODE[run_mode]


@pytest.fixture
def backend(backend_type: str) -> Any:
    """The backend instance (:func:`hother.cancelable.backends.get_backend`) of this run mode."""
    from hother.cancelable.backends import get_backend

    return get_backend(backend_type)  # type: ignore[arg-type]


def run_in_mode(mode: str, fn: Callable[..., Coroutine[Any, Any, Any]], /, **kwargs: Any) -> Any:
    """Run ``fn(**kwargs)`` to completion in the given run mode and return its result."""
    if mode == "trio":
        import trio

        return trio.run(functools.partial(fn, **kwargs))
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if mode == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    elif mode not in ("asyncio", "anyio"):
        raise ValueError(f"unknown run mode {mode!r}; use one of {RUN_MODES}")

    async def main() -> Any:
        if mode == "anyio":
            from hother.cancelable.backends.detection import use_backend

            with use_backend("anyio"):
                return await fn(**kwargs)
        return await fn(**kwargs)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn):
        return None
    callspec = getattr(pyfuncitem, "callspec", None)
    if callspec is None or _PARAM not in callspec.params:
        return None
    mode = callspec.params[_PARAM]
    argnames = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in argnames}
    run_in_mode(mode, fn, **kwargs)
    return True
