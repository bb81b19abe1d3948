"""Cancellable HTTP downloads with httpx, against a local server this example starts itself.

1. a simple download with progress (``download_file``);
2. three downloads at once under one parent operation;
3. a download interrupted half-way, then resumed (``Range``, ``206 Partial Content``);
4. one file fetched as four ranged chunks in parallel (``CancellableHTTPClient``);
5. a retry loop with a timeout per attempt against a server that hangs at first;
6. a download queue stopped by a signal: ``registry.cancel_all()`` cancels every download,
   whose partial files are kept for a later resume.

Run it::

    python examples/http_downloads.py              # asyncio, uvloop, anyio, trio
    python examples/http_downloads.py trio         # one mode

Needs ``httpx`` (``pip install hother-cancelable[httpx]``). The server listens on 127.0.0.1
on a free port, in a thread of this process, and serves deterministic pseudo-random files.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from _common import outcome, parse_modes, run, say, section

from hother.cancelable import (
    Cancellable,
    OperationRegistry,
    detect_backend,
    get_backend,
)
from hother.cancelable.integrations.httpx import CancellableHTTPClient, download_file

KIB = 1024
FILES = {"small": 64 * KIB, "medium": 192 * KIB, "large": 512 * KIB}
CONTENT = {name: random.Random(name).randbytes(size) for name, size in FILES.items()}
HANGING_ATTEMPTS = 2  # /flaky hangs for the first two requests of each key

BASE_URL = ""  # set by serve()


# ------------------------------------------------------------------------------ the server
class Handler(BaseHTTPRequestHandler):
    """``/files/NAME[?delay=S]`` (with ``Range``) and ``/flaky?key=K``."""

    protocol_version = "HTTP/1.1"
    flaky_calls: dict[str, int] = {}
    lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path.startswith("/files/") and url.path[7:] in CONTENT:
            self.send_file(CONTENT[url.path[7:]], float(query.get("delay", ["0"])[0]))
        elif url.path == "/flaky":
            key = query.get("key", [""])[0]
            with self.lock:
                self.flaky_calls[key] = calls = self.flaky_calls.get(key, 0) + 1
            if calls <= HANGING_ATTEMPTS:
                time.sleep(1.0)  # longer than the client's per-attempt timeout
            self.send_body(200, f"ok after {calls} attempts".encode())
        else:
            self.send_body(404, b"not found")

    def send_body(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def send_file(self, data: bytes, delay: float) -> None:
        size = len(data)
        start, end, status = 0, size - 1, 200
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match[1])
            end = min(int(match[2]), size - 1) if match[2] else size - 1
            if start >= size:
                self.send_body(416, b"", {"Content-Range": f"bytes */{size}"})
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        for offset in range(start, end + 1, 8 * KIB):
            self.wfile.write(data[offset : min(offset + 8 * KIB, end + 1)])
            if delay:
                time.sleep(delay)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that went away (cancelled downloads) are expected here


@contextmanager
def serve() -> Iterator[str]:
    """Run the server on 127.0.0.1 (free port) in a thread; yield its base URL."""
    global BASE_URL
    server = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    BASE_URL = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield BASE_URL
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------ the demos
def verify(path: Path, name: str) -> str:
    return "content verified" if path.read_bytes() == CONTENT[name] else "CONTENT MISMATCH"


async def simple_demo(tmp: Path) -> None:
    section("1. a simple download with progress")
    reports: list[str] = []
    op = Cancellable(name="download_small")
    op.on_progress(lambda _id, message, _meta: reports.append(str(message)))
    async with op:
        size = await download_file(f"{BASE_URL}/files/small", tmp / "small.bin", op)
    say(f"downloaded {size} bytes, {verify(tmp / 'small.bin', 'small')}; {outcome(op)}")
    say(f"progress: {reports[0]!r} ... {reports[-1]!r}")


async def concurrent_demo(tmp: Path) -> None:
    section("2. concurrent downloads")
    backend = get_backend()
    results: dict[str, int] = {}
    async with Cancellable(name="batch") as batch, backend.create_task_group() as tg:

        async def fetch(name: str) -> None:
            async with Cancellable(name=f"get_{name}", parent=batch) as op:
                results[name] = await download_file(
                    f"{BASE_URL}/files/{name}", tmp / f"{name}.bin", op
                )

        for name in FILES:
            tg.start_soon(fetch, name)
    verified = all(verify(tmp / f"{n}.bin", n) == "content verified" for n in FILES)
    say(f"sizes: {dict(sorted(results.items()))}; all verified: {verified}; batch {outcome(batch)}")


async def resume_demo(tmp: Path) -> None:
    section("3. interrupted, then resumed")
    cancelled = get_backend().get_cancelled_exc_class()
    path = tmp / "resumable.bin"
    url = f"{BASE_URL}/files/large?delay=0.004"

    first = Cancellable(name="download_large")

    def drop_connection(_id: str, _message: object, meta: dict[str, Any] | None) -> None:
        if meta and meta.get("downloaded_bytes", 0) >= 128 * KIB:
            first.cancel_sync(message="connection dropped (simulated)")

    first.on_progress(drop_connection)
    try:
        async with first:
            await download_file(url, path, first)
    except cancelled:
        pass
    partial = path.stat().st_size
    say(f"first attempt: {outcome(first)}; kept {partial} of {FILES['large']} bytes")

    second = Cancellable(name="resume_large")
    starts: list[int] = []
    second.on_progress(
        lambda _id, message, meta: (
            starts.append(meta["resume_byte"]) if message == "Starting download" and meta else None
        )
    )
    async with second:
        size = await download_file(url, path, second, resume=True)
    say(f"resumed from byte {starts[0]}: {size} bytes, {verify(path, 'large')}")
    say(f"resumed from where it stopped: {starts[0] == partial}")


async def ranged_demo() -> None:
    section("4. parallel ranged chunks")
    backend = get_backend()
    size = FILES["medium"]
    parts: dict[int, bytes] = {}
    step = size // 4
    async with Cancellable.with_timeout(10, name="ranged") as op:
        async with CancellableHTTPClient(op) as client, backend.create_task_group() as tg:

            async def part(start: int) -> None:
                end = min(start + step, size) - 1
                response = await client.get(
                    f"{BASE_URL}/files/medium", headers={"Range": f"bytes={start}-{end}"}
                )
                assert response.status_code == 206
                parts[start] = response.content

            for start in range(0, size, step):
                tg.start_soon(part, start)
    data = b"".join(parts[k] for k in sorted(parts))
    same = data == CONTENT["medium"]
    say(f"{len(parts)} ranges, {len(data)} bytes reassembled, identical: {same}; {outcome(op)}")


async def retry_demo() -> None:
    section("5. retries with a timeout per attempt")
    cancelled = get_backend().get_cancelled_exc_class()
    key = f"{detect_backend()}-{os.getpid()}-{random.random()}"
    async with CancellableHTTPClient() as client:
        for attempt in range(1, 6):
            op = Cancellable.with_timeout(0.25, name=f"attempt_{attempt}")
            try:
                async with op:
                    response = await client.get(f"{BASE_URL}/flaky", params={"key": key})
            except cancelled:
                say(f"attempt {attempt}: {outcome(op)}")
                continue
            say(f"attempt {attempt}: {response.status_code} {response.text!r}")
            break


async def queue_demo(tmp: Path) -> None:
    section("6. a download queue stopped by a signal")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    registry = OperationRegistry.get_instance()
    receiving: set[str] = set()
    all_receiving = backend.create_event()
    downloads: list[Cancellable] = []

    async def queued(name: str) -> None:
        op = Cancellable(name=f"queued_{name}", register_globally=True)
        downloads.append(op)

        def progress(_id: str, message: object, _meta: object) -> None:
            if str(message).startswith("Downloading"):
                receiving.add(name)
                if len(receiving) == len(FILES):
                    all_receiving.set()

        op.on_progress(progress)
        try:
            async with op:
                await download_file(f"{BASE_URL}/files/{name}?delay=0.02", tmp / f"q_{name}", op)
        except cancelled:
            pass

    async with backend.create_task_group() as tg:
        for name in FILES:
            tg.start_soon(queued, name)
        try:
            async with Cancellable.with_signal(signal.SIGUSR1, name="shutdown_watch") as watch:
                await all_receiving.wait()
                os.kill(os.getpid(), signal.SIGUSR1)  # as `kill -USR1 <pid>` would
                await backend.sleep(10)
        except cancelled:
            say(f"shutdown_watch: {outcome(watch)}")
            n = await registry.cancel_all(message="shutdown signal")
            say(f"registry.cancel_all() cancelled {n} downloads")
    states = sorted({outcome(op) for op in downloads})
    kept = sorted((tmp / f"q_{n}").stat().st_size > 0 for n in FILES)
    say(f"downloads: {states}; partial files kept: {kept}")


async def demo() -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        await simple_demo(tmp)
        await concurrent_demo(tmp)
        await resume_demo(tmp)
        await ranged_demo()
        await retry_demo()
        await queue_demo(tmp)


def main() -> int:
    modes = parse_modes(sys.argv[1:])
    with serve() as url:
        print(f"local server: {url}", flush=True)
        for mode in modes:
            run(mode, demo)
    print("http_downloads finished on:", ", ".join(modes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
