"""Fixtures of the integration tests: real HTTP servers and real databases.

HTTP servers (started once per test session, lazily, each in its own thread, on a
pre-bound socket of 127.0.0.1 with a free port; stopped at the end of the session):

* ``uvicorn``        -- uvicorn on a plain asyncio loop (library backend: asyncio / C engine);
* ``uvicorn-uvloop`` -- uvicorn on uvloop;
* ``uvicorn-anyio``  -- uvicorn on asyncio with ``use_backend("anyio")`` forced in the server;
* ``hypercorn-trio`` -- hypercorn's trio worker (``hypercorn.trio.serve``).

``http_server`` gives the server matching the test's run mode (asyncio -> uvicorn, uvloop ->
uvicorn-uvloop, anyio -> uvicorn-anyio, trio -> hypercorn-trio). Every server serves the same
application: the test modules register app factories by path prefix with
``server_pool.register(prefix, factory)`` (a factory takes the :class:`Recorder` side channel
and returns an ASGI app; it is built lazily, once per server).

Databases: ``postgres_dsn`` starts a private PostgreSQL cluster with ``scripts/postgres.sh``
(in ``build/postgres-test-<pid>``, destroyed at the end of the session) unless the
environment variable ``HOTHER_TEST_POSTGRES_DSN`` names a server to use; if no server can be
started the PostgreSQL tests are skipped with the reason.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

SERVER_OF_MODE = {
    "asyncio": "uvicorn",
    "uvloop": "uvicorn-uvloop",
    "anyio": "uvicorn-anyio",
    "trio": "hypercorn-trio",
}


# --------------------------------------------------------------------------- side channel
class Recorder:
    """Thread-safe side channel: the served app records facts, the test waits for them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._values: dict[str, list[Any]] = {}

    def record(self, key: str, value: Any) -> None:
        """Append ``value`` under ``key`` (called by the app, in the server thread)."""
        with self._cond:
            self._values.setdefault(key, []).append(value)
            self._cond.notify_all()

    def get(self, key: str) -> list[Any]:
        """The values recorded so far under ``key``."""
        with self._cond:
            return list(self._values.get(key, ()))

    def wait(self, key: str, count: int = 1, timeout: float = 10.0) -> list[Any]:
        """Block until ``count`` values exist under ``key``; AssertionError after ``timeout``."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self._values.get(key, ())) >= count, timeout)
            values = list(self._values.get(key, ()))
        assert ok, f"the server recorded {values!r} under {key!r}, expected {count} value(s)"
        return values


# --------------------------------------------------------------------------- apps
AppFactory = Callable[[Recorder], Any]


class _Dispatcher:
    """The ASGI app of one server: routes by path prefix to the registered test apps.

    Apps are built lazily, per server, on the first request they serve.
    """

    def __init__(self, pool: ServerPool) -> None:
        self._pool = pool
        self._apps: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _app_for(self, path: str) -> Any:
        for prefix, factory in self._pool.factories():
            if path.startswith(prefix):
                with self._lock:
                    app = self._apps.get(prefix)
                    if app is None:
                        app = self._apps[prefix] = factory(self._pool.recorder)
                return app
        raise RuntimeError(f"no test app serves {path!r}")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # hypercorn always runs it
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await self._app_for(scope.get("path", ""))(scope, receive, send)


# --------------------------------------------------------------------------- servers
def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


class ServerThread:
    """One HTTP server in a daemon thread; connections queue on the pre-bound socket."""

    def __init__(self, kind: str, app: Any, recorder: Recorder) -> None:
        self.kind = kind
        self.recorder = recorder
        #: ``"asyncio"`` or ``"anyio"``: the library backend the served code uses
        self.backend = "anyio" if kind in ("uvicorn-anyio", "hypercorn-trio") else "asyncio"
        self._app = app
        self._sock = _listening_socket()
        port = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        self._error: BaseException | None = None
        self._stop: Callable[[], None] = lambda: None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"test-{kind}", daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(10), f"{self.kind} server thread did not start"
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        try:
            if self.kind == "hypercorn-trio":
                self._run_hypercorn_trio()
            else:
                self._run_uvicorn()
        except BaseException as exc:  # pragma: no cover - reported by start()/stop()
            self._error = exc
            self._ready.set()

    def _run_uvicorn(self) -> None:
        import uvicorn

        config = uvicorn.Config(
            self._app,
            loop="uvloop" if self.kind == "uvicorn-uvloop" else "asyncio",
            lifespan="off",
            log_level="warning",
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)

        def stop() -> None:
            server.should_exit = True

        self._stop = stop
        self._ready.set()
        if self.kind == "uvicorn-anyio":
            from hother.cancelable.backends import use_backend

            with use_backend("anyio"):
                server.run(sockets=[self._sock])
        else:
            server.run(sockets=[self._sock])

    def _run_hypercorn_trio(self) -> None:
        import trio
        from hypercorn.config import Config
        from hypercorn.trio import serve

        config = Config()
        config.bind = [f"fd://{os.dup(self._sock.fileno())}"]
        config.graceful_timeout = 2
        config.loglevel = "WARNING"
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")  # captured by pytest

        async def main() -> None:
            stop_event = trio.Event()
            trio_token = trio.lowlevel.current_trio_token()

            def stop() -> None:
                trio.from_thread.run_sync(stop_event.set, trio_token=trio_token)

            self._stop = stop
            self._ready.set()
            await serve(self._app, config, shutdown_trigger=stop_event.wait)  # type: ignore[arg-type]

        trio.run(main)

    def stop(self) -> None:
        if self._thread.is_alive():
            try:
                self._stop()
            except Exception:  # pragma: no cover - the loop already ended
                pass
            self._thread.join(15)
        self._sock.close()
        assert not self._thread.is_alive(), f"{self.kind} server did not stop"
        if self._error is not None:
            raise self._error


class ServerPool:
    """The session's servers, started on first use."""

    def __init__(self) -> None:
        self.recorder = Recorder()
        self._servers: dict[str, ServerThread] = {}
        self._factories: list[tuple[str, AppFactory]] = []
        self._lock = threading.Lock()

    def register(self, prefix: str, factory: AppFactory) -> None:
        """Serve ``factory(recorder)`` for request paths starting with ``prefix``."""
        with self._lock:
            if all(existing != prefix for existing, _ in self._factories):
                self._factories.append((prefix, factory))
                self._factories.sort(key=lambda item: -len(item[0]))

    def factories(self) -> list[tuple[str, AppFactory]]:
        """The registered (prefix, factory) pairs, longest prefix first."""
        with self._lock:
            return list(self._factories)

    def get(self, kind: str) -> ServerThread:
        with self._lock:
            server = self._servers.get(kind)
            if server is None:
                server = ServerThread(kind, _Dispatcher(self), self.recorder).start()
                self._servers[kind] = server
            return server

    def stop_all(self) -> None:
        errors = []
        for server in self._servers.values():
            try:
                server.stop()
            except BaseException as exc:  # pragma: no cover
                errors.append(exc)
        self._servers.clear()
        if errors:
            raise errors[0]


@pytest.fixture(scope="session")
def server_pool() -> Iterator[ServerPool]:
    """All test servers of the session (stopped at the end)."""
    pool = ServerPool()
    yield pool
    pool.stop_all()


@pytest.fixture
def http_server(server_pool: ServerPool, run_mode: str) -> ServerThread:
    """The server matching the run mode (see the module docstring)."""
    return server_pool.get(SERVER_OF_MODE[run_mode])


@pytest.fixture
def asyncio_server(server_pool: ServerPool) -> ServerThread:
    """The plain uvicorn/asyncio server, whatever the run mode (for client-side tests)."""
    return server_pool.get("uvicorn")


@pytest.fixture
def recorder(server_pool: ServerPool) -> Recorder:
    """The side channel the served apps write to."""
    return server_pool.recorder


# --------------------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="session")
def postgres_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``postgresql://...`` DSN of a running PostgreSQL server (skips if none can run)."""
    dsn = os.environ.get("HOTHER_TEST_POSTGRES_DSN")
    if dsn:
        yield dsn
        return
    script = REPO / "scripts" / "postgres.sh"
    _destroy_stale_clusters(script)
    cluster = REPO / "build" / f"postgres-test-{os.getpid()}"
    try:
        proc = subprocess.run(
            ["bash", str(script), "start", str(cluster)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"PostgreSQL could not be started by scripts/postgres.sh: {exc}")
    if proc.returncode != 0 or not proc.stdout.strip():
        subprocess.run(["bash", str(script), "destroy", str(cluster)], capture_output=True)
        pytest.skip(
            "PostgreSQL could not be started by scripts/postgres.sh: "
            + (proc.stderr.strip().splitlines() or ["no output"])[-1]
        )
    try:
        yield proc.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(
            ["bash", str(script), "destroy", str(cluster)], capture_output=True, timeout=60
        )


def _destroy_stale_clusters(script: Path) -> None:
    """Remove the clusters of earlier test runs that were killed before their teardown."""
    for cluster in (REPO / "build").glob("postgres-test-*"):
        pid = cluster.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # that test run is still alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        subprocess.run(
            ["bash", str(script), "destroy", str(cluster)], capture_output=True, timeout=60
        )
