"""A real HTTP server on 127.0.0.1 for the end-to-end tests.

A stdlib ``ThreadingHTTPServer`` (one thread per connection, independent of every event loop
and of the library under test) serving:

* ``/blob/{size}``         -- ``size`` deterministic bytes, with ``Range: bytes=N-`` support
  (``206 Partial Content``); ``?delay=S&chunk=N`` throttles the body (``N`` bytes every ``S``
  seconds);
* ``/slow/{seconds}``      -- answers after ``seconds``.

Server-side facts (a client that went away, requests seen) are recorded in
:class:`ServerLog` for the tests to wait on, with generous timeouts.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest


@functools.lru_cache(maxsize=8)
def blob(size: int) -> bytes:
    """The deterministic content of ``/blob/{size}``."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


class ServerLog:
    """Thread-safe record of what the server saw."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.disconnects = 0
        self.requests: list[tuple[str, str | None]] = []

    def note_request(self, path: str, range_header: str | None) -> None:
        with self.cond:
            self.requests.append((path, range_header))
            self.cond.notify_all()

    def note_disconnect(self) -> None:
        with self.cond:
            self.disconnects += 1
            self.cond.notify_all()

    def wait_disconnects(self, n: int, timeout: float = 15.0) -> bool:
        """Wait until ``n`` clients went away mid-response (False on timeout)."""
        with self.cond:
            return self.cond.wait_for(lambda: self.disconnects >= n, timeout)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # silence
        pass

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        log: ServerLog = self.server.log
        log.note_request(url.path, self.headers.get("Range"))
        try:
            if url.path.startswith("/blob/"):
                self._blob(int(url.path.split("/")[2]), query)
            elif url.path.startswith("/slow/"):
                time.sleep(float(url.path.split("/")[2]))
                self._send(200, b"slow done")
            else:
                self._send(404, b"not found")
        except (BrokenPipeError, ConnectionResetError):
            log.note_disconnect()

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _blob(self, size: int, query: dict[str, list[str]]) -> None:
        data = blob(size)
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        delay = float(query.get("delay", ["0"])[0])
        chunk = int(query.get("chunk", [str(len(body) or 1)])[0])
        for i in range(0, len(body), chunk):
            self.wfile.write(body[i : i + chunk])
            self.wfile.flush()
            if delay:
                time.sleep(delay)


class HTTPServer:
    """The running server: ``url(path)`` and the :class:`ServerLog`."""

    def __init__(self) -> None:
        self.log = ServerLog()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.log = self.log  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@pytest.fixture(scope="session")
def http_server() -> Iterator[HTTPServer]:
    """The session's HTTP server on 127.0.0.1 (a free port)."""
    server = HTTPServer()
    try:
        yield server
    finally:
        server.close()
