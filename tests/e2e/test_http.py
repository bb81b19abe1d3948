"""HTTP downloads with timeouts and tokens against a real server on 127.0.0.1.

Uses the httpx integration (``hother.cancelable.integrations.httpx``): ``download_file``
and ``CancellableHTTPClient``; one test also uses plain ``httpx`` inside a ``Cancellable``.
Runs in every run mode (httpx runs on asyncio, uvloop and trio).
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from hother.cancelable import Cancellable, CancellationReason, CancellationToken, OperationStatus
from hother.cancelable.integrations.httpx import CancellableHTTPClient, download_file

from .conftest import HTTPServer, blob

SIZE = 400_000


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_download_completes_within_its_timeout(
    http_server: HTTPServer, tmp_path: Path
) -> None:
    """A 400 kB download under a generous timeout: complete, byte-exact, COMPLETED."""
    target = tmp_path / "blob.bin"
    progress: list[Any] = []
    op = Cancellable.with_timeout(60, name="download").on_progress(
        lambda _id, msg, _meta: progress.append(msg)
    )
    async with op:
        size = await download_file(http_server.url(f"/blob/{SIZE}"), target, op, 65536)
    assert size == SIZE
    assert _sha(target.read_bytes()) == _sha(blob(SIZE))
    assert op.status == OperationStatus.COMPLETED
    assert progress[0] == "Starting download" and progress[-1] == "Download completed"


async def test_timeout_interrupts_a_download_which_then_resumes(
    http_server: HTTPServer, tmp_path: Path, backend: Any
) -> None:
    """A throttled download (about 2 s) under a 0.3 s timeout stops part-way with the
    native cancel exception (CANCELLED / TIMEOUT), the server sees the client go away (the
    connection is not leaked), and a second download resumes from the partial file with a
    ``Range`` request and ends byte-exact."""
    cancel_exc = backend.get_cancelled_exc_class()
    target = tmp_path / "partial.bin"
    url = http_server.url(f"/blob/{SIZE}?delay=0.02&chunk=4000")
    disconnects = http_server.log.disconnects
    op = Cancellable.with_timeout(0.3, name="slow download")
    with pytest.raises(cancel_exc):
        async with op:
            await download_file(url, target, op, 4096)
    assert op.status == OperationStatus.CANCELLED
    assert op.context.cancel_reason == CancellationReason.TIMEOUT
    assert http_server.log.wait_disconnects(disconnects + 1), "the connection was not closed"
    partial = target.stat().st_size if target.exists() else 0
    assert partial < SIZE

    resumed = Cancellable(name="resume")
    async with resumed:
        size = await download_file(http_server.url(f"/blob/{SIZE}"), target, resumed, 65536)
    assert size == SIZE
    assert _sha(target.read_bytes()) == _sha(blob(SIZE))
    if partial:
        assert (f"/blob/{SIZE}", f"bytes={partial}-") in http_server.log.requests


async def test_thread_cancels_a_shared_token_during_a_streamed_request(
    http_server: HTTPServer, backend: Any
) -> None:
    """A plain thread (a GUI / keyboard listener) cancels a shared token while another task
    streams a response through ``CancellableHTTPClient``: the stream stops with the native
    cancel exception, the operation records the token's reason and message."""
    cancel_exc = backend.get_cancelled_exc_class()
    token = CancellationToken()
    started = threading.Event()
    received = 0
    url = http_server.url(f"/blob/{SIZE}?delay=0.02&chunk=2000")

    def listener() -> None:
        started.wait(30)
        token.cancel_sync(CancellationReason.SIGNAL, "user pressed stop")

    thread = threading.Thread(target=listener)
    thread.start()
    op = Cancellable.with_token(token, name="streamed")
    try:
        with pytest.raises(cancel_exc):
            async with op:
                async with CancellableHTTPClient(op, token=token) as client:
                    async with client.stream("GET", url) as response:
                        async for chunk in response.aiter_bytes():
                            received += len(chunk)
                            started.set()
    finally:
        started.set()
        thread.join(10)
    assert 0 < received < SIZE
    assert op.status == OperationStatus.CANCELLED
    assert op.context.cancel_reason == CancellationReason.SIGNAL
    assert op.context.cancel_message == "user pressed stop"


async def test_plain_httpx_inside_a_cancellable(http_server: HTTPServer, backend: Any) -> None:
    """No integration: plain ``httpx`` inside ``Cancellable.with_timeout`` -- a slow
    endpoint is interrupted by the timeout, a fast one completes in the next operation."""
    cancel_exc = backend.get_cancelled_exc_class()
    async with httpx.AsyncClient() as client:
        op = Cancellable.with_timeout(0.2)
        with pytest.raises(cancel_exc):
            async with op:
                await client.get(http_server.url("/slow/5"))
        assert op.context.cancel_reason == CancellationReason.TIMEOUT
        async with Cancellable.with_timeout(30) as ok:
            response = await client.get(http_server.url("/blob/1000"))
        assert response.content == blob(1000)
        assert ok.is_completed
