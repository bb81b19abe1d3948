"""Backend detection (``detect_backend``, ``use_backend``) and the registry (``get_backend``)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading

import pytest
import sniffio
import trio

import hother.cancelable.backends as backends
from hother.cancelable.backends import (
    AsyncBackend,
    BackendDetectionError,
    NoAsyncContextError,
    UnsupportedBackendError,
    detect_backend,
    forced_backend,
    get_backend,
    use_backend,
)
from hother.cancelable.backends.detection import ENV_VAR


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


# -- detection in each run mode ------------------------------------------------------------


async def test_each_mode_detects_its_backend(run_mode: str, backend_type: str) -> None:
    expected = {"asyncio": "asyncio", "uvloop": "asyncio", "anyio": "anyio", "trio": "anyio"}
    assert detect_backend() == expected[run_mode] == backend_type


async def test_get_backend_without_argument_matches_the_mode(
    backend_type: str, backend: AsyncBackend
) -> None:
    detected = get_backend()
    assert detected is backend
    assert detected.name == backend_type
    assert isinstance(detected, AsyncBackend)


async def test_uvloop_mode_really_runs_uvloop(run_mode: str) -> None:
    if run_mode == "uvloop":
        import uvloop

        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
    elif run_mode == "trio":
        assert sniffio.current_async_library() == "trio"
    else:
        assert type(asyncio.get_running_loop()).__module__.startswith("asyncio")


def test_outside_a_loop_raises_no_async_context() -> None:
    with pytest.raises(NoAsyncContextError, match="no async library is running") as info:
        detect_backend()
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value, BackendDetectionError)
    with pytest.raises(NoAsyncContextError):
        get_backend()


def test_outside_a_loop_use_backend_alone_is_not_enough() -> None:
    with use_backend("anyio"), pytest.raises(NoAsyncContextError):
        detect_backend()


# -- environment variable ----------------------------------------------------------------


def test_env_var_forces_anyio_on_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "anyio")

    async def main() -> str:
        return detect_backend()

    assert asyncio.run(main()) == "anyio"


def test_env_var_asyncio_on_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "asyncio")

    async def main() -> str:
        return detect_backend()

    assert asyncio.run(main()) == "asyncio"


def test_env_var_empty_means_automatic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "")

    async def main() -> str:
        return detect_backend()

    assert asyncio.run(main()) == "asyncio"
    assert trio.run(main) == "anyio"


def test_env_var_invalid_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "curio")

    async def main() -> str:
        return detect_backend()

    with pytest.raises(BackendDetectionError, match=f"{ENV_VAR}.*'curio'"):
        asyncio.run(main())


def test_env_var_asyncio_under_trio_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "asyncio")

    async def main() -> str:
        return detect_backend()

    with pytest.raises(BackendDetectionError, match="trio"):
        trio.run(main)


def test_use_backend_wins_over_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "anyio")

    async def main() -> str:
        with use_backend("asyncio"):
            return detect_backend()

    assert asyncio.run(main()) == "asyncio"


# -- use_backend scoping -----------------------------------------------------------------


def test_use_backend_nested_and_restored() -> None:
    async def main() -> list[str | None]:
        seen: list[str | None] = [detect_backend(), forced_backend()]
        with use_backend("anyio"):
            seen.append(detect_backend())
            with use_backend("asyncio"):
                seen.append(detect_backend())
            seen.append(detect_backend())
        seen.append(detect_backend())
        seen.append(forced_backend())
        return seen

    assert asyncio.run(main()) == ["asyncio", None, "anyio", "asyncio", "anyio", "asyncio", None]


def test_use_backend_restored_after_an_exception() -> None:
    async def main() -> str:
        with pytest.raises(KeyError), use_backend("anyio"):
            raise KeyError("boom")
        return detect_backend()

    assert asyncio.run(main()) == "asyncio"


def test_use_backend_is_per_task() -> None:
    async def main() -> dict[str, str]:
        seen: dict[str, str] = {}
        entered = asyncio.Event()
        release = asyncio.Event()

        async def forcing() -> None:
            with use_backend("anyio"):
                entered.set()
                await release.wait()
                seen["forcing"] = detect_backend()

        async def plain() -> None:
            await entered.wait()
            seen["plain"] = detect_backend()
            release.set()

        with use_backend("anyio"):
            inherited = asyncio.get_running_loop().create_task(_detect_later())
        await asyncio.gather(forcing(), plain())
        seen["inherited"] = await inherited
        seen["host"] = detect_backend()
        return seen

    async def _detect_later() -> str:
        await asyncio.sleep(0)
        return detect_backend()

    assert asyncio.run(main()) == {
        "forcing": "anyio",
        "plain": "asyncio",
        "inherited": "anyio",  # tasks copy the context they were created in
        "host": "asyncio",
    }


def test_use_backend_rejects_bad_names() -> None:
    with pytest.raises(ValueError, match="'asyncio' or 'anyio'"), use_backend("trio"):  # type: ignore[arg-type]
        pass
    with pytest.raises(TypeError, match="must be a str"), use_backend(None):  # type: ignore[arg-type]
        pass


def test_forcing_asyncio_under_trio_is_an_error() -> None:
    async def main() -> None:
        with use_backend("asyncio"):
            detect_backend()

    with pytest.raises(BackendDetectionError, match="only the 'anyio' backend can run under trio"):
        trio.run(main)


def test_forcing_anyio_under_trio_is_fine() -> None:
    async def main() -> str:
        with use_backend("anyio"):
            return detect_backend()

    assert trio.run(main) == "anyio"


def test_unsupported_library_names_it() -> None:
    token = sniffio.current_async_library_cvar.set("curio")
    try:
        with pytest.raises(UnsupportedBackendError, match="'curio'") as info:
            detect_backend()
        assert isinstance(info.value, BackendDetectionError)
        with pytest.raises(UnsupportedBackendError, match="'curio'"):
            get_backend()
    finally:
        sniffio.current_async_library_cvar.reset(token)


# -- get_backend -------------------------------------------------------------------------


def test_get_backend_caches_one_instance_per_type() -> None:
    asyncio_backend = get_backend("asyncio")
    anyio_backend = get_backend("anyio")
    assert get_backend("asyncio") is asyncio_backend
    assert get_backend("anyio") is anyio_backend
    assert asyncio_backend is not anyio_backend
    assert (asyncio_backend.name, anyio_backend.name) == ("asyncio", "anyio")
    assert type(asyncio_backend).__name__ == "AsyncioBackend"
    assert type(anyio_backend).__name__ == "AnyioBackend"


def test_get_backend_rejects_bad_types() -> None:
    with pytest.raises(ValueError, match="'asyncio', 'anyio' or None"):
        get_backend("trio")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'asyncio', 'anyio' or None"):
        get_backend(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'asyncio', 'anyio' or None"):
        get_backend(["asyncio"])  # type: ignore[arg-type]


def test_get_backend_is_thread_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "_backends", {})
    barrier = threading.Barrier(8)
    results: list[AsyncBackend] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        for name in ("anyio", "asyncio") * 50:
            backend = get_backend(name)
            with lock:
                results.append(backend)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 800
    assert len({id(b) for b in results}) == 2


def _run_python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_backends_are_imported_lazily_and_asyncio_never_imports_anyio() -> None:
    out = _run_python(
        """
        import asyncio, sys
        import hother.cancelable.backends as b
        print(int("hother.cancelable.backends.asyncio_backend" in sys.modules),
              int("hother.cancelable.backends.anyio_backend" in sys.modules))

        async def main():
            backend = b.get_backend()
            with backend.create_cancel_scope(deadline=backend.current_time() + 0.01) as s:
                await backend.sleep(5)
            async with backend.create_task_group() as tg:
                tg.start_soon(backend.sleep, 0)
            q = backend.create_queue(1)
            await q.put(1)
            backend.create_lock(), backend.create_event()
            await backend.run_sync_in_thread(len, "ab")
            return s.cancelled_caught

        print(asyncio.run(main()))
        print(int("hother.cancelable.backends.asyncio_backend" in sys.modules),
              int("hother.cancelable.backends.anyio_backend" in sys.modules),
              int("anyio" in sys.modules), int("trio" in sys.modules))
        """
    )
    assert out.splitlines() == ["0 0", "True", "1 0 0 0"]
