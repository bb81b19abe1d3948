"""FastAPI integration against real servers (uvicorn on asyncio/uvloop/anyio, hypercorn on trio).

The served app records what happened server-side in a side channel (``recorder``); the
client is httpx, running in the test's own run mode.
"""

from __future__ import annotations

import hashlib
import inspect
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request

from hother.cancelable import (
    Cancellable,
    CancellationReason,
    CancellationToken,
    OperationStatus,
    current_operation,
)
from hother.cancelable.integrations.fastapi import (
    CancellableWebSocket,
    RequestCancellationMiddleware,
    cancellable_dependency,
    cancellable_streaming_response,
    get_request_token,
    request_cancellable,
    with_cancellation,
)

DEFAULT_TIMEOUT = 0.8
HangOperation = Annotated[Cancellable, Depends(request_cancellable(timeout=30))]
ROUTE_TIMEOUT = 0.3


def _state(op: Cancellable) -> tuple[str, str | None]:
    reason = op.context.cancel_reason
    return op.status.value, reason.value if reason is not None else None


def make_app(rec: Any) -> Any:
    """The FastAPI app served under ``/api``."""
    app = FastAPI(openapi_url="/api/openapi.json")

    @app.get("/api/slow/{key}")
    @with_cancellation(timeout=ROUTE_TIMEOUT)
    async def slow(key: str, request: Request) -> dict[str, str]:
        op = current_operation()
        assert op is not None
        rec.record(key, op)
        await anyio.sleep(30)
        return {"never": "reached"}

    @app.get("/api/fast")
    @with_cancellation(timeout=5)
    async def fast() -> dict[str, Any]:
        op = current_operation()
        assert op is not None
        return {"name": op.context.name, "backend": _backend_name()}

    @app.get("/api/items/{item_id}")
    @with_cancellation()
    async def item(item_id: int, q: str = "none") -> dict[str, Any]:
        return {"item_id": item_id, "q": q}

    @app.get("/api/hang/{key}")
    async def hang(key: str, op: HangOperation) -> None:
        rec.record(key, "started")
        try:
            async with op:
                await anyio.sleep(30)
        finally:
            rec.record(key, _state(op))

    @app.get("/api/plain-slow/{key}")
    async def plain_slow(key: str, request: Request) -> None:
        rec.record(key, request.scope["cancellation_operation"])
        await anyio.sleep(30)

    @app.post("/api/echo")
    async def echo(request: Request) -> dict[str, Any]:
        body = await request.body()
        return {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}

    @app.post("/api/upload-hang/{key}")
    async def upload_hang(key: str, request: Request) -> None:
        body = await request.body()
        op = await cancellable_dependency(request)
        rec.record(key, len(body))
        try:
            async with op:
                await anyio.sleep(30)
        finally:
            rec.record(key, _state(op))

    async def ticks(key: str) -> AsyncIterator[str]:
        try:
            i = 0
            while True:
                yield f"data: {i}\n\n"
                i += 1
                await anyio.sleep(0.02)
        finally:
            rec.record(key + ":closed", True)

    @app.get("/api/stream/{key}")
    async def stream(key: str, sse: bool = False, request: Request = None) -> Any:  # type: ignore[assignment]
        op = await cancellable_dependency(request, ROUTE_TIMEOUT if sse else None)
        op.on_cancel(lambda ctx: rec.record(key, _state(op)))
        op.on_complete(lambda ctx: rec.record(key, _state(op)))
        media = "text/event-stream" if sse else "text/plain"
        return await cancellable_streaming_response(ticks(key), op, media_type=media)

    return RequestCancellationMiddleware(app, default_timeout=DEFAULT_TIMEOUT)


def _backend_name() -> str:
    from hother.cancelable.backends import get_backend

    return get_backend().name


@pytest.fixture(autouse=True)
def _serve_api(server_pool: Any) -> None:
    server_pool.register("/api", make_app)


def _key() -> str:
    return uuid.uuid4().hex


async def _wait(recorder: Any, key: str, count: int = 1) -> list[Any]:
    values: list[Any] = await anyio.to_thread.run_sync(recorder.wait, key, count, 10.0)
    return values


# --------------------------------------------------------------------------- real server
async def test_fast_endpoint_runs_inside_an_operation(http_server: Any) -> None:
    async with httpx.AsyncClient(base_url=http_server.base_url) as client:
        resp = await client.get("/api/fast")
    assert resp.status_code == 200
    assert resp.json() == {"name": "GET /api/fast", "backend": http_server.backend}


async def test_wrapped_endpoint_keeps_its_signature(http_server: Any) -> None:
    async with httpx.AsyncClient(base_url=http_server.base_url) as client:
        resp = await client.get("/api/items/42", params={"q": "x"})
        bad = await client.get("/api/items/notanint")
        schema = (await client.get("/api/openapi.json")).json()
    assert resp.status_code == 200 and resp.json() == {"item_id": 42, "q": "x"}
    assert bad.status_code == 422
    params = {p["name"] for p in schema["paths"]["/api/items/{item_id}"]["get"]["parameters"]}
    assert params == {"item_id", "q"}
    assert "parameters" not in schema["paths"]["/api/fast"]["get"]


async def test_route_timeout_answers_504(http_server: Any, recorder: Any) -> None:
    key = _key()
    async with httpx.AsyncClient(base_url=http_server.base_url, timeout=10) as client:
        resp = await client.get(f"/api/slow/{key}")
    assert resp.status_code == 504
    assert resp.json() == {"detail": "Request timeout"}
    (op,) = recorder.get(key)
    assert op.status is OperationStatus.CANCELLED
    assert op.context.cancel_reason is CancellationReason.TIMEOUT


async def test_middleware_default_timeout_answers_504(http_server: Any, recorder: Any) -> None:
    key = _key()
    async with httpx.AsyncClient(base_url=http_server.base_url, timeout=10) as client:
        resp = await client.get(f"/api/plain-slow/{key}")
    assert resp.status_code == 504
    assert resp.json() == {"detail": "Request timeout"}
    (op,) = recorder.get(key)
    assert op.status is OperationStatus.CANCELLED
    assert op.context.cancel_reason is CancellationReason.TIMEOUT


async def test_client_disconnect_cancels_the_handler(http_server: Any, recorder: Any) -> None:
    key = _key()
    async with httpx.AsyncClient(base_url=http_server.base_url, timeout=30) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.get, f"/api/hang/{key}")
            await _wait(recorder, key)  # the handler runs
            tg.cancel_scope.cancel()  # the client gives up: the connection is closed
    values = await _wait(recorder, key, 2)
    assert values[1] == ("cancelled", "signal")


async def test_disconnect_seen_after_the_body_was_read(http_server: Any, recorder: Any) -> None:
    key = _key()
    body = b"x" * 300_000
    async with httpx.AsyncClient(base_url=http_server.base_url, timeout=30) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: client.post(f"/api/upload-hang/{key}", content=body))
            await _wait(recorder, key)
            tg.cancel_scope.cancel()
    values = await _wait(recorder, key, 2)
    assert values == [len(body), ("cancelled", "signal")]


async def test_request_body_is_not_stolen(http_server: Any) -> None:
    body = bytes(range(256)) * 8192  # 2 MiB, delivered in many ASGI messages
    async with httpx.AsyncClient(base_url=http_server.base_url, timeout=30) as client:
        resp = await client.post("/api/echo", content=body)
        empty = await client.post("/api/echo")
    assert resp.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    assert empty.json()["length"] == 0


async def test_streaming_response_stops_at_its_timeout(http_server: Any, recorder: Any) -> None:
    key = _key()
    async with httpx.AsyncClient(base_url=http_server.base_url, timeout=10) as client:
        resp = await client.get(f"/api/stream/{key}", params={"sse": "true"})
    assert resp.status_code == 200
    text = resp.text
    assert text.startswith("data: 0\n\n")
    assert text.endswith("event: cancelled\ndata: Stream cancelled\n\n")
    assert text.count("data: ") > 2
    assert (await _wait(recorder, key)) == [("cancelled", "timeout")]
    assert (await _wait(recorder, key + ":closed")) == [True]


async def test_streaming_client_disconnect_cancels(http_server: Any, recorder: Any) -> None:
    key = _key()
    received = []
    async with httpx.AsyncClient(base_url=http_server.base_url, timeout=10) as client:
        async with client.stream("GET", f"/api/stream/{key}") as resp:
            async for chunk in resp.aiter_text():
                received.append(chunk)
                if len(received) >= 3:
                    break
    ((status, reason),) = await _wait(recorder, key)
    assert status == "cancelled"
    assert reason == "signal"
    assert (await _wait(recorder, key + ":closed")) == [True]


# --------------------------------------------------------------------------- no server
def _request(path: str = "/test", method: str = "GET", **scope: Any) -> Request:
    base: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": [],
        "client": ("10.0.0.7", 1234),
        "server": ("testserver", 80),
        "scheme": "http",
        "root_path": "",
    }
    base.update(scope)
    return Request(base)


def test_middleware_attributes_and_validation() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    mw = RequestCancellationMiddleware(app, default_timeout=5)
    assert mw.app is app and mw.default_timeout == 5.0
    assert RequestCancellationMiddleware(app).default_timeout is None
    with pytest.raises(ValueError, match="default_timeout"):
        RequestCancellationMiddleware(app, default_timeout=0)
    with pytest.raises(TypeError, match="default_timeout"):
        RequestCancellationMiddleware(app, default_timeout="5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="app"):
        RequestCancellationMiddleware(None)  # type: ignore[arg-type]


def test_get_request_token_creates_once() -> None:
    request = _request()
    token = get_request_token(request)
    assert isinstance(token, CancellationToken)
    assert request.scope["cancellation_token"] is token
    assert get_request_token(request) is token
    given = CancellationToken()
    assert get_request_token(_request(cancellation_token=given)) is given


async def test_cancellable_dependency_name_and_metadata() -> None:
    op = await cancellable_dependency(_request(), timeout=5.0)
    assert op.context.name == "GET /test"
    assert op.context.metadata == {"method": "GET", "path": "/test", "client": "10.0.0.7"}
    bare = await cancellable_dependency(_request(client=None))
    assert bare.context.metadata["client"] is None
    with pytest.raises(TypeError, match="request"):
        await cancellable_dependency("nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        await cancellable_dependency(_request(), timeout=-1)


async def test_dependency_is_cancelled_by_the_request_token() -> None:
    request = _request()
    op = await cancellable_dependency(request)
    with pytest.raises(anyio.get_cancelled_exc_class()):
        async with op:
            get_request_token(request).cancel_sync(CancellationReason.SIGNAL, "gone")
            await anyio.sleep(5)
    assert _state(op) == ("cancelled", "signal")


def test_with_cancellation_wraps() -> None:
    async def endpoint(request: Request, x: int) -> int:
        """Doc."""
        return x

    wrapped = with_cancellation(timeout=1)(endpoint)
    assert inspect.iscoroutinefunction(wrapped)
    assert wrapped.__name__ == "endpoint" and wrapped.__doc__ == "Doc."
    assert wrapped.__wrapped__ is endpoint  # type: ignore[attr-defined]
    assert inspect.signature(wrapped) == inspect.signature(endpoint)
    with pytest.raises(TypeError, match="async"):
        with_cancellation()(lambda: None)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="timeout"):
        with_cancellation(timeout=0)
    with pytest.raises(TypeError, match="raise_on_cancel"):
        with_cancellation(raise_on_cancel="yes")  # type: ignore[arg-type]


async def test_with_cancellation_timeout_becomes_504() -> None:
    @with_cancellation(timeout=0.05)
    async def endpoint(request: Request) -> str:
        await anyio.sleep(5)
        return "late"

    with pytest.raises(HTTPException) as info:
        await endpoint(_request())
    assert info.value.status_code == 504 and info.value.detail == "Request timeout"


async def test_with_cancellation_client_gone_and_token_reasons() -> None:
    @with_cancellation()
    async def endpoint(request: Request) -> str:
        get_request_token(request).cancel_sync(CancellationReason.SIGNAL, "Client disconnected")
        await anyio.sleep(5)
        return "late"

    with pytest.raises(HTTPException) as info:
        await endpoint(request=_request())
    assert info.value.status_code == 503 and info.value.detail == "Client closed connection"

    @with_cancellation()
    async def manual(request: Request) -> str:
        get_request_token(request).cancel_sync(CancellationReason.MANUAL, "admin")
        await anyio.sleep(5)
        return "late"

    with pytest.raises(HTTPException) as info:
        await manual(_request())
    assert info.value.status_code == 503 and info.value.detail == "Request cancelled: admin"


async def test_with_cancellation_raise_on_cancel_false_propagates() -> None:
    @with_cancellation(timeout=0.05, raise_on_cancel=False)
    async def endpoint(request: Request) -> str:
        await anyio.sleep(5)
        return "late"

    with pytest.raises(anyio.get_cancelled_exc_class()):
        await endpoint(_request())


async def test_outer_cancellation_is_not_converted() -> None:
    @with_cancellation(timeout=30)
    async def endpoint(request: Request) -> str:
        await anyio.sleep(5)
        return "late"

    with pytest.raises(anyio.get_cancelled_exc_class()):
        async with Cancellable.with_timeout(0.05) as outer:
            await endpoint(_request())
    assert outer.context.cancel_reason is CancellationReason.TIMEOUT


async def test_with_cancellation_needs_the_request() -> None:
    @with_cancellation()
    async def endpoint(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="Request"):
        await endpoint(x=1)
    assert await endpoint(x=2, cancellation_request__=_request()) == 2


class FakeWebSocket:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def accept(self, **kwargs: Any) -> None:
        self.calls.append(("accept", kwargs))

    async def send_text(self, data: str) -> None:
        self.calls.append(("send_text", data))

    async def send_json(self, data: Any) -> None:
        self.calls.append(("send_json", data))

    async def receive_text(self) -> str:
        self.calls.append(("receive_text", None))
        return "hello"

    async def receive_json(self) -> Any:
        self.calls.append(("receive_json", None))
        return {"a": 1}

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.calls.append(("close", (code, reason)))


async def test_cancellable_websocket_forwards_and_checks() -> None:
    ws = FakeWebSocket()
    op = Cancellable(name="ws")
    progress: list[str] = []
    op.on_progress(lambda _id, msg, _meta: progress.append(msg))
    cws = CancellableWebSocket(ws, op)  # type: ignore[arg-type]
    assert cws.websocket is ws and cws.cancellable is op
    await cws.accept(subprotocol="x")
    await cws.send_text("t")
    await cws.send_json({"j": 1})
    assert await cws.receive_text() == "hello"
    assert await cws.receive_json() == {"a": 1}
    await cws.close(1001, "bye")
    assert [name for name, _ in ws.calls] == [
        "accept",
        "send_text",
        "send_json",
        "receive_text",
        "receive_json",
        "close",
    ]
    assert ws.calls[0][1] == {"subprotocol": "x"} and ws.calls[-1][1] == (1001, "bye")
    assert progress == ["WebSocket connected", "WebSocket closed"]
    op.token.cancel_sync()
    with pytest.raises((anyio.get_cancelled_exc_class(), Exception)):
        await cws.send_text("after")
    assert len(ws.calls) == 6
    with pytest.raises(TypeError, match="cancellable"):
        CancellableWebSocket(ws, object())  # type: ignore[arg-type]


async def test_streaming_response_helper_validates() -> None:
    async def gen() -> AsyncIterator[str]:
        yield "x"

    op = Cancellable()
    resp = await cancellable_streaming_response(gen(), op, media_type="text/event-stream")
    assert resp.media_type == "text/event-stream"
    with pytest.raises(ValueError, match="chunk_size"):
        await cancellable_streaming_response(gen(), op, chunk_size=0)
    with pytest.raises(TypeError, match="cancellable"):
        await cancellable_streaming_response(gen(), None)  # type: ignore[arg-type]


def test_package_import_does_not_import_the_integrations() -> None:
    code = (
        "import sys, hother.cancelable, hother.cancelable.integrations;"
        "print(sorted(m for m in ('fastapi', 'starlette', 'httpx', 'sqlalchemy', 'aiosqlite',"
        " 'asyncpg', 'aiofiles') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
