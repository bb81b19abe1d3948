"""The pytest plugin (``hother.cancelable.pytest_plugin``): run modes, markers, fixtures, and
coexistence with pytest-asyncio and anyio's pytest plugin.

Each test writes a small test file and runs pytest on it in-process with ``pytester``; the
plugins are loaded explicitly (``-p``), entry-point auto-loading is turned off so that only
the plugins named in each run are active.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest_plugins = ["pytester"]

OURS = "hother.cancelable.pytest_plugin"
#: silences pytest-asyncio's deprecation warning about an unset default
ASYNCIO_SCOPE = ("-o", "asyncio_default_fixture_loop_scope=function")


def run(pytester: pytest.Pytester, *plugins: str, args: tuple[str, ...] = ()) -> Any:
    """Run pytest in-process with only our plugin (and ``plugins``) loaded."""
    options = ["-p", OURS]
    for plugin in plugins:
        options += ["-p", plugin]
    return pytester.runpytest_inprocess(
        *options, "-p", "no:cacheprovider", "-p", "no:randomly", "-rs", "-v", *args
    )


@pytest.fixture(autouse=True)
def _no_autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def test_async_tests_run_in_the_four_modes_with_their_backend(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio
        import pytest
        import sniffio

        EXPECTED = {"asyncio": "asyncio", "uvloop": "asyncio", "anyio": "anyio", "trio": "anyio"}

        async def test_mode(run_mode, backend_type, backend):
            assert backend_type == EXPECTED[run_mode] == backend.name
            library = sniffio.current_async_library()
            assert library == ("trio" if run_mode == "trio" else "asyncio")
            if run_mode == "uvloop":
                import uvloop
                assert isinstance(asyncio.get_running_loop(), uvloop.Loop)

        @pytest.mark.all_modes
        async def test_explicit_all_modes(run_mode):
            pass

        def test_sync_is_untouched():
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=9)
    result.stdout.fnmatch_lines(
        [
            "*test_mode?asyncio? PASSED*",
            "*test_mode?uvloop? PASSED*",
            "*test_mode?anyio? PASSED*",
            "*test_mode?trio? PASSED*",
            "*test_explicit_all_modes?trio? PASSED*",
            "*test_sync_is_untouched PASSED*",
        ]
    )


def test_modes_marker_skips_the_other_modes_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.modes("asyncio", "trio", reason="needs a plain loop")
        async def test_restricted(run_mode):
            assert run_mode in ("asyncio", "trio")
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines(["*not run in mode uvloop: needs a plain loop*"])


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            '@pytest.mark.all_modes\n@pytest.mark.modes("asyncio")\nasync def test_x(): pass',
            "*contradict each other*",
        ),
        (
            "@pytest.mark.all_modes\n@pytest.mark.anyio\nasync def test_x(): pass",
            "*all_modes cannot be combined*",
        ),
        (
            "@pytest.mark.virtual_clock\n@pytest.mark.anyio\nasync def test_x(): pass",
            "*virtual_clock only applies to the tests this plugin runs*",
        ),
        ('@pytest.mark.modes("curio")\nasync def test_x(): pass', "*unknown run mode 'curio'*"),
        (
            "@pytest.mark.virtual_clock(autojump_threshold=-1)\nasync def test_x(): pass",
            "*autojump_threshold must be >= 0*",
        ),
        (
            "@pytest.mark.virtual_clock(1)\nasync def test_x(): pass",
            "*takes only the keyword autojump_threshold*",
        ),
        (
            '@pytest.mark.virtual_clock(autojump_threshold="0")\nasync def test_x(): pass',
            "*autojump_threshold must be a number*",
        ),
    ],
    ids=[
        "all-and-modes",
        "all-and-anyio",
        "virtual-and-anyio",
        "unknown-mode",
        "negative",
        "positional",
        "str",
    ],
)
def test_marker_misuse_is_a_usage_error(
    pytester: pytest.Pytester, source: str, message: str
) -> None:
    pytester.makepyfile("import pytest\n\n" + source + "\n")
    result = run(pytester, "anyio.pytest_plugin")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*UsageError*", message])


def test_virtual_clock_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import time
        import pytest
        from hother.cancelable import Cancellable

        @pytest.mark.virtual_clock
        async def test_hour(backend, run_mode):
            real0 = time.perf_counter()
            t0 = backend.current_time()
            await backend.sleep(3600)
            with pytest.raises(backend.get_cancelled_exc_class()):
                async with Cancellable.with_timeout(600):
                    await backend.sleep(10_000)
            assert backend.current_time() == t0 + 4200
            assert time.perf_counter() - real0 < 10

        @pytest.mark.virtual_clock(autojump_threshold=0.001)
        async def test_threshold(virtual_clock):
            assert virtual_clock.autojump_threshold == 0.001
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=6, skipped=2)
    result.stdout.fnmatch_lines(["*uvloop's event loop*cannot run on a virtual clock*"])


def test_virtual_clock_fixture_alone_enables_virtual_time(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import math

        async def test_fixture(virtual_clock, backend, run_mode):
            kind = type(virtual_clock).__name__
            assert kind == ("MockClock" if run_mode == "trio" else "VirtualClock")
            t0 = virtual_clock.current_time()
            assert t0 == backend.current_time()
            await backend.sleep(86_400)
            assert backend.current_time() == t0 + 86_400
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=3, skipped=1)


def test_without_virtual_clock_time_is_real(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio
        from hother.cancelable.testing import VirtualClockEventLoop

        async def test_real(run_mode):
            if run_mode != "trio":
                loop = asyncio.get_running_loop()
                assert not isinstance(loop, VirtualClockEventLoop)
        """
    )
    run(pytester).assert_outcomes(passed=4)


def test_next_to_pytest_asyncio_strict_mode(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio
        import pytest

        CALLS = []

        @pytest.mark.asyncio
        async def test_left_to_pytest_asyncio(request):
            assert "run_mode" not in request.fixturenames
            await asyncio.sleep(0)
            CALLS.append("asyncio-marked")

        async def test_ours(run_mode):
            CALLS.append(run_mode)

        def test_counts():
            assert CALLS.count("asyncio-marked") == 1
            assert sorted(c for c in CALLS if c != "asyncio-marked") == [
                "anyio", "asyncio", "trio", "uvloop"
            ]
        """
    )
    result = run(
        pytester, "pytest_asyncio.plugin", args=("-o", "asyncio_mode=strict", *ASYNCIO_SCOPE)
    )
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*test_left_to_pytest_asyncio PASSED*"])


def test_next_to_anyio_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        import sniffio

        @pytest.fixture(params=["asyncio", "trio"])
        def anyio_backend(request):
            return request.param

        @pytest.mark.anyio
        async def test_left_to_anyio(anyio_backend, request):
            assert "run_mode" not in request.fixturenames
            assert sniffio.current_async_library() == anyio_backend

        async def test_ours(run_mode):
            pass
        """
    )
    result = run(pytester, "anyio.pytest_plugin")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(
        ["*test_left_to_anyio?asyncio? PASSED*", "*test_left_to_anyio?trio? PASSED*"]
    )


def test_all_three_plugins_together(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def anyio_backend():
            return "asyncio"

        @pytest.mark.asyncio
        async def test_a():
            pass

        @pytest.mark.anyio
        async def test_b():
            pass

        @pytest.mark.virtual_clock
        async def test_c(backend):
            await backend.sleep(1e6)
        """
    )
    result = run(
        pytester,
        "pytest_asyncio.plugin",
        "anyio.pytest_plugin",
        args=("-o", "asyncio_mode=strict", *ASYNCIO_SCOPE),
    )
    result.assert_outcomes(passed=5, skipped=1)


def test_pytest_asyncio_auto_mode_claims_unmarked_tests(pytester: pytest.Pytester) -> None:
    """The documented pitfall: in auto mode pytest-asyncio marks every async test, so our
    plugin leaves them to it (one run, no run modes)."""
    pytester.makepyfile(
        """
        async def test_unmarked(request):
            assert "run_mode" not in request.fixturenames
        """
    )
    result = run(
        pytester, "pytest_asyncio.plugin", args=("-o", "asyncio_mode=auto", *ASYNCIO_SCOPE)
    )
    result.assert_outcomes(passed=1)


def test_run_in_mode_helpers() -> None:
    from hother.cancelable.pytest_plugin import run_in_mode, run_in_mode_with_clock
    from hother.cancelable.testing import VirtualClock, trio_mock_clock

    async def now(backend_type: str) -> tuple[str, float]:
        from hother.cancelable.backends import get_backend

        backend = get_backend()
        t0 = backend.current_time()
        await backend.sleep(100)
        return backend.name, backend.current_time() - t0

    async def name(backend_type: str) -> str:
        from hother.cancelable.backends import get_backend

        return get_backend().name

    assert [run_in_mode(m, name, backend_type="x") for m in ("asyncio", "uvloop", "anyio")] == [
        "asyncio",
        "asyncio",
        "anyio",
    ]
    assert run_in_mode_with_clock("asyncio", VirtualClock(), now, backend_type="asyncio") == (
        "asyncio",
        100,
    )
    assert run_in_mode_with_clock("anyio", VirtualClock(), now, backend_type="anyio") == (
        "anyio",
        100,
    )
    assert run_in_mode_with_clock("trio", trio_mock_clock(), now, backend_type="anyio") == (
        "anyio",
        100,
    )
    with pytest.raises(ValueError, match="uvloop"):
        run_in_mode_with_clock("uvloop", VirtualClock(), now, backend_type="asyncio")
    with pytest.raises(TypeError, match="clock"):
        run_in_mode_with_clock("asyncio", None, now, backend_type="asyncio")
    with pytest.raises(TypeError, match="VirtualClock"):
        run_in_mode_with_clock("asyncio", trio_mock_clock(), now, backend_type="asyncio")
    with pytest.raises(TypeError, match="trio Clock"):
        run_in_mode_with_clock("trio", VirtualClock(), now, backend_type="anyio")
    with pytest.raises(ValueError, match="unknown run mode"):
        run_in_mode("curio", name, backend_type="asyncio")


def test_anyio_plugin_tests_can_use_the_virtual_clock(pytester: pytest.Pytester) -> None:
    """anyio's own plugin runs on our virtual clock through ``backend_options``."""
    pytester.makepyfile(
        """
        import time

        import anyio
        import pytest

        from hother.cancelable.testing import trio_mock_clock, virtual_clock_loop_factory

        @pytest.fixture(params=["asyncio", "trio"])
        def anyio_backend(request):
            if request.param == "asyncio":
                return ("asyncio", {"loop_factory": virtual_clock_loop_factory()})
            return ("trio", {"clock": trio_mock_clock()})

        @pytest.mark.anyio
        async def test_hour(anyio_backend):
            real0 = time.perf_counter()
            t0 = anyio.current_time()
            with anyio.move_on_after(600):
                await anyio.sleep(3600)
            assert anyio.current_time() == t0 + 600
            assert time.perf_counter() - real0 < 10
        """
    )
    run(pytester, "anyio.pytest_plugin").assert_outcomes(passed=2)
