"""pytest plugin of hother.cancelable: run every async test in every run mode.

Registered through the ``pytest11`` entry point, so installing the package enables it.

Run modes (the mode shows in the test id, e.g. ``test_x[trio]``):

* ``asyncio``: a plain asyncio event loop, native asyncio backend;
* ``uvloop``: asyncio with uvloop's loop, native asyncio backend;
* ``anyio``: asyncio underneath, the anyio backend forced with ``use_backend("anyio")``;
* ``trio``: ``trio.run``; sniffio reports trio, so the anyio backend is detected.

Every ``async def`` test that no other plugin claims (``@pytest.mark.anyio`` /
``@pytest.mark.asyncio`` / ``@pytest.mark.trio`` tests are left to anyio's, pytest-asyncio's
and pytest-trio's plugins) is run in all four modes. ``@pytest.mark.all_modes`` says so
explicitly (a no-op alias of the default). ``@pytest.mark.modes("asyncio", "uvloop",
reason="...")`` restricts a test: the other modes are still generated and reported as
skipped with that reason.

Virtual time: ``@pytest.mark.virtual_clock`` (optionally ``(autojump_threshold=...)``), or
requesting the ``virtual_clock`` fixture, runs the test on a virtual clock: a
:class:`~hother.cancelable.testing.clock.VirtualClockEventLoop` in the asyncio and anyio
modes, ``trio.testing.MockClock`` in trio mode. Time then only advances when every task is
blocked, so ``await sleep(3600)`` returns at once. The uvloop mode cannot be virtualised and
is reported as skipped.

Fixtures: ``run_mode`` (the mode name), ``backend_type`` (``"asyncio"`` or ``"anyio"``),
``backend`` (the :class:`~hother.cancelable.backends.base.AsyncBackend` instance) and
``virtual_clock`` (the clock of a virtual-time test: ``jump(seconds)``, ``current_time()``,
``autojump_threshold``). See ``docs/testing.md``.
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
_CLOCK_FIXTURE = "virtual_clock"
_OTHER_PLUGIN_MARKERS = ("anyio", "asyncio", "trio")
UVLOOP_VIRTUAL_CLOCK_REASON = (
    "uvloop's event loop is implemented in C and cannot run on a virtual clock "
    "(virtual_clock tests run in the asyncio, anyio and trio modes)"
)
"""Why the uvloop mode of a virtual-clock test is skipped."""


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers ``modes``, ``all_modes`` and ``virtual_clock``."""
    config.addinivalue_line(
        "markers",
        "modes(*names, reason=...): run this async test only in the named run modes "
        "(the others are reported as skipped with the reason)",
    )
    config.addinivalue_line(
        "markers",
        "all_modes: run this async test in every run mode (asyncio, uvloop, anyio, trio); "
        "the default for async tests",
    )
    config.addinivalue_line(
        "markers",
        "virtual_clock(autojump_threshold=0.0): run this async test on a virtual clock "
        "(asyncio/anyio: VirtualClockEventLoop, trio: MockClock; uvloop mode skipped)",
    )


def _claimed_by_other_plugin(definition: Any) -> bool:
    return any(definition.get_closest_marker(m) is not None for m in _OTHER_PLUGIN_MARKERS)


def _clock_threshold(node: Any) -> float:
    """The ``autojump_threshold`` of the ``virtual_clock`` marker of ``node`` (default 0)."""
    marker = node.get_closest_marker("virtual_clock")
    if marker is None:
        return 0.0
    if marker.args or set(marker.kwargs) - {"autojump_threshold"}:
        raise pytest.UsageError(
            "@pytest.mark.virtual_clock takes only the keyword autojump_threshold=<seconds>, "
            f"got args={marker.args!r} kwargs={marker.kwargs!r}"
        )
    threshold = marker.kwargs.get("autojump_threshold", 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise pytest.UsageError(
            "@pytest.mark.virtual_clock: autojump_threshold must be a number of seconds, "
            f"got {type(threshold).__name__}"
        )
    if not threshold >= 0:  # also NaN
        raise pytest.UsageError(
            f"@pytest.mark.virtual_clock: autojump_threshold must be >= 0, got {threshold!r}"
        )
    return float(threshold)


def _wants_virtual_clock(node: Any, fixturenames: Any) -> bool:
    return node.get_closest_marker("virtual_clock") is not None or _CLOCK_FIXTURE in fixturenames


def _new_clock(mode: str, autojump_threshold: float) -> Any:
    """A fresh virtual clock for ``mode`` (``MockClock`` for trio)."""
    from hother.cancelable.testing.clock import VirtualClock, trio_mock_clock

    if mode == "trio":
        return trio_mock_clock(autojump_threshold)
    if mode == "uvloop":
        pytest.skip(UVLOOP_VIRTUAL_CLOCK_REASON)
    return VirtualClock(autojump_threshold)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize every unclaimed ``async def`` test with the run modes (``run_mode``).

    Modes excluded by ``@pytest.mark.modes`` (and uvloop for virtual-clock tests) are kept
    as skipped parameters, so the restriction shows in the report.
    """
    if not inspect.iscoroutinefunction(metafunc.function):
        return
    definition = metafunc.definition
    if _claimed_by_other_plugin(definition):
        if definition.get_closest_marker("all_modes") is not None:
            raise pytest.UsageError(
                f"{definition.nodeid}: @pytest.mark.all_modes cannot be combined with "
                "@pytest.mark.anyio/asyncio/trio (those tests are run by their own plugin)"
            )
        if definition.get_closest_marker("virtual_clock") is not None:
            raise pytest.UsageError(
                f"{definition.nodeid}: @pytest.mark.virtual_clock only applies to the tests "
                "this plugin runs, not to @pytest.mark.anyio/asyncio/trio tests; for anyio's "
                "plugin return ('asyncio', {'loop_factory': virtual_clock_loop_factory()}) "
                "from the anyio_backend fixture (see docs/testing.md)"
            )
        return
    if _PARAM in metafunc.fixturenames and any(
        _PARAM in getattr(c, "params", {}) for c in getattr(metafunc, "_calls", [])
    ):
        return
    marker = definition.get_closest_marker("modes")
    if marker is not None and definition.get_closest_marker("all_modes") is not None:
        raise pytest.UsageError(
            f"{definition.nodeid}: @pytest.mark.all_modes and @pytest.mark.modes(...) "
            "contradict each other; use one of them"
        )
    virtual = _wants_virtual_clock(definition, metafunc.fixturenames)
    if virtual:
        _clock_threshold(definition)  # validate the marker at collection time
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
        elif virtual and mode == "uvloop":
            marks.append(pytest.mark.skip(reason=UVLOOP_VIRTUAL_CLOCK_REASON))
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


@pytest.fixture
def virtual_clock(request: pytest.FixtureRequest, run_mode: str) -> Any:
    """The virtual clock the test runs on (requesting it turns virtual time on).

    A :class:`~hother.cancelable.testing.clock.VirtualClock` in the asyncio and anyio modes,
    a ``trio.testing.MockClock`` in trio mode; both offer ``jump(seconds)``,
    ``current_time()`` and a settable ``autojump_threshold`` (from
    ``@pytest.mark.virtual_clock(autojump_threshold=...)``, default 0). The uvloop mode is
    skipped.
    """
    return _new_clock(run_mode, _clock_threshold(request.node))


def run_in_mode(mode: str, fn: Callable[..., Coroutine[Any, Any, Any]], /, **kwargs: Any) -> Any:
    """Run ``fn(**kwargs)`` to completion in the given run mode and return its result."""
    return _run(mode, fn, kwargs, None)


def run_in_mode_with_clock(
    mode: str, clock: Any, fn: Callable[..., Coroutine[Any, Any, Any]], /, **kwargs: Any
) -> Any:
    """:func:`run_in_mode` on virtual time: ``clock`` is a
    :class:`~hother.cancelable.testing.clock.VirtualClock` (asyncio, anyio modes) or a trio
    clock such as ``MockClock`` (trio mode); the uvloop mode raises :class:`ValueError`."""
    if clock is None:
        raise TypeError("clock must be a virtual clock, got None")
    return _run(mode, fn, kwargs, clock)


def _run(
    mode: str, fn: Callable[..., Coroutine[Any, Any, Any]], kwargs: dict[str, Any], clock: Any
) -> Any:
    if mode == "trio":
        import trio

        if clock is not None and not isinstance(clock, trio.abc.Clock):
            raise TypeError(f"clock must be a trio Clock in trio mode, got {type(clock).__name__}")
        return trio.run(functools.partial(fn, **kwargs), clock=clock)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if mode == "uvloop":
        if clock is not None:
            raise ValueError(f"mode: {UVLOOP_VIRTUAL_CLOCK_REASON}")
        import uvloop

        loop_factory = uvloop.new_event_loop
    elif mode not in ("asyncio", "anyio"):
        raise ValueError(f"unknown run mode {mode!r}; use one of {RUN_MODES}")
    if clock is not None:
        from hother.cancelable.testing.clock import VirtualClock, virtual_clock_loop_factory

        if not isinstance(clock, VirtualClock):
            raise TypeError(
                f"clock must be a VirtualClock in {mode} mode, got {type(clock).__name__}"
            )
        loop_factory = virtual_clock_loop_factory(clock)

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
    """Run a run-mode test in its mode (on a virtual clock when asked); others: not ours."""
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn):
        return None
    callspec = getattr(pyfuncitem, "callspec", None)
    if callspec is None or _PARAM not in callspec.params:
        return None
    mode = callspec.params[_PARAM]
    argnames = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in argnames}
    clock: Any = None
    if _CLOCK_FIXTURE in pyfuncitem.funcargs:
        clock = pyfuncitem.funcargs[_CLOCK_FIXTURE]
    elif pyfuncitem.get_closest_marker("virtual_clock") is not None:
        clock = _new_clock(mode, _clock_threshold(pyfuncitem))
    _run(mode, fn, kwargs, clock)
    return True
