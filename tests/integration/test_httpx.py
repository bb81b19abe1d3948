"""httpx integration against a real local HTTP server (a tiny ASGI app on uvicorn / hypercorn).

The client runs in the test's run mode (asyncio, uvloop, anyio, trio); the server is the one
matching that mode (see conftest).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
import httpx
import pytest

from hother.cancelable import Cancellable, CancellationReason, CancellationToken, OperationStatus
from hother.cancelable.integrations import httpx as hx
from hother.cancelable.integrations.httpx import CancellableHTTPClient, download_file


def content(n: int) -> bytes:
    """The deterministic body of ``/files/data/{n}``."""
    return bytes((i * 7 + i // 251) % 256 for i in range(n))


def make_files_app(rec: Any) -> Any:
    """Raw ASGI app under ``/files``.

    * ``/files/data/{n}?chunk=C&delay=D&ranges=1`` -- ``content(n)`` in chunks of C bytes,
      D seconds apart; honours ``Range: bytes=S-`` (206 / 416) only with ``ranges=1``.
    * ``/files/hold/{key}?first=B`` -- sends B bytes, then holds the response open until the
      client disconnects (recorded under ``key``).
    * ``/files/slow/{key}`` -- records ``started`` and answers only when the client gives up
      (records ``disconnected``).
    """

    async def app(scope: Any, receive: Any, send: Any) -> None:
        parts = scope["path"].strip("/").split("/")
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        headers = dict(scope["headers"])
        kind, arg = parts[1], parts[2]
        if kind == "data":
            await _data(int(arg), query, headers, send)
        elif kind == "hold":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            first = int(query.get("first", "10"))
            await send({"type": "http.response.body", "body": b"h" * first, "more_body": True})
            await _wait_disconnect(receive)
            rec.record(arg, "disconnected")
        elif kind == "slow":
            rec.record(arg, "started")
            await _wait_disconnect(receive)
            rec.record(arg, "disconnected")
        else:  # pragma: no cover
            raise RuntimeError(scope["path"])

    async def _wait_disconnect(receive: Any) -> None:
        with anyio.move_on_after(30):
            while (await receive())["type"] != "http.disconnect":
                pass

    async def _data(n: int, query: dict[str, str], headers: dict[bytes, bytes], send: Any) -> None:
        body = content(n)
        chunk = int(query.get("chunk", "4096"))
        delay = float(query.get("delay", "0"))
        status, start = 200, 0
        extra: list[tuple[bytes, bytes]] = [(b"accept-ranges", b"bytes")]
        rng = headers.get(b"range", b"").decode()
        if query.get("ranges") == "1" and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            if start >= n:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 416,
                        "headers": [(b"content-range", f"bytes */{n}".encode())],
                    }
                )
                await send({"type": "http.response.body", "body": b""})
                return
            status = 206
            extra.append((b"content-range", f"bytes {start}-{n - 1}/{n}".encode()))
        payload = body[start:]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", str(len(payload)).encode()), *extra],
            }
        )
        for i in range(0, len(payload), chunk):
            if delay and i:
                await anyio.sleep(delay)
            await send(
                {"type": "http.response.body", "body": payload[i : i + chunk], "more_body": True}
            )
        await send({"type": "http.response.body", "body": b""})

    return app


@pytest.fixture(autouse=True)
def _serve_files(server_pool: Any) -> None:
    server_pool.register("/files", make_files_app)


def _progress(op: Cancellable) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []
    op.on_progress(lambda _id, msg, meta: seen.append((msg, meta)))
    return seen


# --------------------------------------------------------------------------- requests
async def test_request_reports_progress(http_server: Any) -> None:
    op = Cancellable(name="fetch")
    seen = _progress(op)
    async with CancellableHTTPClient(op, base_url=http_server.base_url) as client:
        assert client.token is op.token
        resp = await client.get("/files/data/100")
    assert resp.status_code == 200 and resp.content == content(100)
    assert [m for m, _ in seen] == [
        "Starting GET request to /files/data/100",
        "Completed GET request",
    ]
    assert seen[1][1]["status_code"] == 200
    assert seen[1][1]["url"].endswith("/files/data/100")


async def test_request_error_is_reported_and_reraised() -> None:
    op = Cancellable()
    seen = _progress(op)
    async with CancellableHTTPClient(op) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://127.0.0.1:9/unreachable")  # discard port: refused
    assert seen[-1][0] == "Request failed: ConnectError"
    assert "error" in seen[-1][1]


async def test_token_cancelled_from_another_task_stops_the_request(
    http_server: Any, recorder: Any
) -> None:
    key = uuid.uuid4().hex
    token = CancellationToken()
    caught: list[BaseException] = []

    async def fetch(client: CancellableHTTPClient) -> None:
        try:
            await client.get(f"/files/slow/{key}")
        except BaseException as exc:
            caught.append(exc)

    async with CancellableHTTPClient(token=token, base_url=http_server.base_url) as client:
        assert client.token is token and client.cancellable is None
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(fetch, client)
                await anyio.to_thread.run_sync(recorder.wait, key)
                await token.cancel(CancellationReason.MANUAL, "stop")
    assert len(caught) == 1 and isinstance(caught[0], anyio.get_cancelled_exc_class())
    assert (await anyio.to_thread.run_sync(recorder.wait, key, 2)) == ["started", "disconnected"]


async def test_cancelled_token_refuses_new_requests(http_server: Any) -> None:
    token = CancellationToken()
    token.cancel_sync()
    async with CancellableHTTPClient(token=token, base_url=http_server.base_url) as client:
        with pytest.raises(anyio.get_cancelled_exc_class()):
            await client.get("/files/data/10")


async def test_timeout_of_the_enclosing_operation_stops_the_request(
    http_server: Any, recorder: Any
) -> None:
    key = uuid.uuid4().hex
    with pytest.raises(anyio.get_cancelled_exc_class()):
        async with Cancellable.with_timeout(0.2) as op:
            async with CancellableHTTPClient(op, base_url=http_server.base_url) as client:
                await client.get(f"/files/slow/{key}")
    assert op.is_cancelled and op.context.cancel_reason is CancellationReason.TIMEOUT
    assert (await anyio.to_thread.run_sync(recorder.wait, key, 2)) == ["started", "disconnected"]


# --------------------------------------------------------------------------- streams
async def test_stream_interrupted_by_timeout(http_server: Any) -> None:
    got = bytearray()
    with pytest.raises(anyio.get_cancelled_exc_class()):
        async with Cancellable.with_timeout(0.3) as op:
            async with CancellableHTTPClient(op, base_url=http_server.base_url) as client:
                async with client.stream("GET", "/files/data/4000?chunk=100&delay=0.05") as r:
                    async for chunk in r.aiter_bytes():
                        got += chunk
    assert op.status is OperationStatus.CANCELLED
    assert op.context.cancel_reason is CancellationReason.TIMEOUT
    assert 0 < len(got) < 4000 and bytes(got) == content(4000)[: len(got)]


async def test_stream_stops_at_the_next_chunk_once_cancelled(http_server: Any) -> None:
    token = CancellationToken()
    chunks = 0
    async with CancellableHTTPClient(token=token, base_url=http_server.base_url) as client:
        with pytest.raises(anyio.get_cancelled_exc_class()):
            async with client.stream("GET", "/files/data/5000?chunk=100") as r:
                async for _ in r.aiter_bytes(100):
                    chunks += 1
                    if chunks == 3:
                        token.cancel_sync()
    assert chunks == 3


async def test_stream_waiting_for_data_is_interrupted(http_server: Any, recorder: Any) -> None:
    key = uuid.uuid4().hex
    token = CancellationToken()
    first = anyio.Event()
    caught: list[BaseException] = []

    async def read(client: CancellableHTTPClient) -> None:
        try:
            async with client.stream("GET", f"/files/hold/{key}?first=10") as r:
                async for _ in r.aiter_raw():
                    first.set()
        except BaseException as exc:
            caught.append(exc)

    async with CancellableHTTPClient(token=token, base_url=http_server.base_url) as client:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read, client)
                await first.wait()
                token.cancel_sync()
    assert len(caught) == 1 and isinstance(caught[0], anyio.get_cancelled_exc_class())
    assert (await anyio.to_thread.run_sync(recorder.wait, key)) == ["disconnected"]


async def test_stream_reports_progress_every_100_chunks(http_server: Any) -> None:
    op = Cancellable()
    seen = _progress(op)
    async with CancellableHTTPClient(op, base_url=http_server.base_url) as client:
        async with client.stream("GET", "/files/data/25000?chunk=100", chunk_size=100) as r:
            total = sum([len(c) async for c in r.aiter_bytes()])
    assert total == 25000
    streaming = [meta for msg, meta in seen if msg == "Streaming data"]
    assert [m["chunks"] for m in streaming] == [100, 200]
    assert streaming[0]["bytes"] == 10000


async def test_stream_raises_for_status(http_server: Any) -> None:
    async with CancellableHTTPClient(base_url=http_server.base_url) as client:
        with pytest.raises(httpx.HTTPStatusError):
            async with client.stream(
                "GET", "/files/data/10?ranges=1", headers={"Range": "bytes=50-"}
            ):
                pass  # pragma: no cover


# --------------------------------------------------------------------------- downloads
async def test_download_complete(http_server: Any, tmp_path: Path) -> None:
    out = tmp_path / "f.bin"
    op = Cancellable()
    seen = _progress(op)
    size = await download_file(
        f"{http_server.base_url}/files/data/50000?ranges=1", str(out), op, chunk_size=4096
    )
    assert size == 50000 and out.read_bytes() == content(50000)
    assert seen[0] == ("Starting download", {"total_bytes": 50000, "resume_byte": 0})
    assert seen[-2][0] == "Downloading: 100.0%"
    assert seen[-1] == ("Download completed", {"total_bytes": 50000})


async def test_download_stopped_by_timeout_then_resumed(http_server: Any, tmp_path: Path) -> None:
    out = tmp_path / "f.bin"
    url = f"{http_server.base_url}/files/data/20000?ranges=1&chunk=500&delay=0.03"
    with pytest.raises(anyio.get_cancelled_exc_class()):
        async with Cancellable.with_timeout(0.3) as op:
            await download_file(url, out, op, chunk_size=500)
    assert op.status is OperationStatus.CANCELLED
    assert op.context.cancel_reason is CancellationReason.TIMEOUT
    partial = out.read_bytes()
    assert 0 < len(partial) < 20000 and partial == content(20000)[: len(partial)]

    again = Cancellable()
    seen = _progress(again)
    async with again:
        size = await download_file(url.replace("delay=0.03", "delay=0"), out, again)
    assert size == 20000 and out.read_bytes() == content(20000)
    assert seen[0] == ("Starting download", {"total_bytes": 20000, "resume_byte": len(partial)})


async def test_download_restarts_when_the_server_ignores_range(
    http_server: Any, tmp_path: Path
) -> None:
    out = tmp_path / "f.bin"
    out.write_bytes(content(3000)[:1000])
    op = Cancellable()
    seen = _progress(op)
    size = await download_file(f"{http_server.base_url}/files/data/3000", str(out), op)
    assert size == 3000 and out.read_bytes() == content(3000)
    assert seen[0] == ("Starting download", {"total_bytes": 3000, "resume_byte": 0})


async def test_download_of_a_complete_file_and_without_resume(
    http_server: Any, tmp_path: Path
) -> None:
    out = tmp_path / "f.bin"
    out.write_bytes(content(3000))
    url = f"{http_server.base_url}/files/data/3000?ranges=1"
    assert await download_file(url, str(out), Cancellable()) == 3000
    assert out.read_bytes() == content(3000)
    out.write_bytes(b"garbage" * 1000)
    assert await download_file(url, str(out), Cancellable(), resume=False) == 3000
    assert out.read_bytes() == content(3000)


async def test_download_uses_the_client_class_of_the_module(
    http_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[tuple[Any, ...]] = []

    class Recording(CancellableHTTPClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(hx, "CancellableHTTPClient", Recording)
    op = Cancellable()
    await download_file(f"{http_server.base_url}/files/data/10", str(tmp_path / "x"), op)
    assert built == [(op,)]


# --------------------------------------------------------------------------- no server
class FakeAsyncClient:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.closed = 0

    async def __aenter__(self) -> FakeAsyncClient:
        return self

    async def request(self, method: str, url: str, **kwargs: Any) -> Any:
        self.calls.append((method, url, kwargs))
        return httpx.Response(204, request=httpx.Request(method, "http://x" + url))

    async def aclose(self) -> None:
        self.closed += 1


async def test_verbs_forward_exactly_and_close_once() -> None:
    client = CancellableHTTPClient()
    fake = FakeAsyncClient()
    await client.client.aclose()
    client.client = fake
    async with client:
        await client.get("/a")
        await client.post("/b", json={"x": 1})
        await client.put("/c")
        await client.delete("/d")
    await client.close()
    assert fake.calls == [
        ("GET", "/a", {}),
        ("POST", "/b", {"json": {"x": 1}}),
        ("PUT", "/c", {}),
        ("DELETE", "/d", {}),
    ]
    assert fake.closed == 1


async def test_validation(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="cancellable"):
        CancellableHTTPClient(cancellable="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="token"):
        CancellableHTTPClient(token="x")  # type: ignore[arg-type]
    async with CancellableHTTPClient() as client:
        with pytest.raises(ValueError, match="chunk_size"):
            async with client.stream("GET", "http://127.0.0.1:9/", chunk_size=0):
                pass  # pragma: no cover
        with pytest.raises(TypeError, match="method"):
            await client.request(1, "/")  # type: ignore[arg-type]
    op = Cancellable()
    with pytest.raises(TypeError, match="cancellable"):
        await download_file("http://x/", str(tmp_path / "f"), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size"):
        await download_file("http://x/", str(tmp_path / "f"), op, chunk_size=0)
    with pytest.raises(TypeError, match="output_path"):
        await download_file("http://x/", 3, op)  # type: ignore[arg-type]
