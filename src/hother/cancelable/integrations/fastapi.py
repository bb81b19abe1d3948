"""FastAPI / Starlette integration: cancel request handling when the client goes away.

* :class:`RequestCancellationMiddleware` -- pure ASGI middleware. Per HTTP request it creates a
  :class:`~hother.cancelable.CancellationToken` (``scope["cancellation_token"]``), cancels it
  with reason ``SIGNAL`` ("Client disconnected") when the client disconnects, and runs the
  app inside a request operation linked to that token, with ``default_timeout`` as its
  deadline. A request that times out before its response started is answered
  ``504 Request timeout``.
* :func:`get_request_token`, :func:`cancellable_dependency` /
  :func:`request_cancellable` (dependencies), :func:`with_cancellation` (endpoint decorator),
  :func:`cancellable_streaming_response`, :class:`CancellableWebSocket`.

Status codes: ``504`` for a timeout; ``503`` when the client disconnected (nobody reads the
answer any more -- the code only shows in server logs; the non-standard ``499`` of 0.1 is not
used) and ``503 Request cancelled: {message}`` for any other cancellation of the request's
own token. A cancellation coming from *outside* the request (server shutdown, an enclosing
scope) is never converted into an HTTP error: it propagates.

How disconnects are seen (0.2; 0.1 read ``receive()`` concurrently with the app and stole
request-body messages): the middleware wraps ``receive``. While the request body is being
delivered only the app reads it, and an ``http.disconnect`` it receives cancels the token.
Once the body is complete -- at once for a request without a body (no ``Content-Length`` /
``Transfer-Encoding``), whose single empty ``http.request`` message is then forwarded to the
app untouched -- a watcher task waits for the next message, which the ASGI protocol makes an
``http.disconnect``. A handler that never reads a request *body* therefore gets the
disconnect only when it reads the body. Disconnects after the response is complete are
ignored, and the watcher stops as soon as the app returns.

Works with asyncio (uvicorn, hypercorn) and with trio (hypercorn's trio worker; Starlette
runs on trio through anyio).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

import anyio
from fastapi import HTTPException, Request
from starlette.responses import StreamingResponse
from starlette.websockets import WebSocket

from ..core.cancellable import Cancellable
from ..core.exceptions import CancellationError
from ..core.models import CancellationReason, OperationStatus
from ..core.token import CancellationToken
from ..sources.timeout import TimeoutSource, validate_timeout
from . import _cancel_exc_class, _outer_cancel_pending, _own_cancel_reason, _shielded

__all__ = [
    "CancellableStreamingResponse",
    "CancellableWebSocket",
    "RequestCancellationMiddleware",
    "cancellable_dependency",
    "cancellable_streaming_response",
    "get_request_token",
    "request_cancellable",
    "with_cancellation",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

logger = logging.getLogger(__name__)

#: ASGI scope keys set by the middleware.
TOKEN_KEY = "cancellation_token"
OPERATION_KEY = "cancellation_operation"

CLIENT_DISCONNECTED = "Client disconnected"
_SSE_CANCELLED = b"event: cancelled\ndata: Stream cancelled\n\n"


def _check_timeout(timeout: object, what: str = "timeout") -> float | None:
    if timeout is None:
        return None
    return validate_timeout(timeout, what)


def _has_body(scope: Scope) -> bool:
    """Whether the request may carry a body (then the app reads it before the watcher)."""
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            try:
                return int(value) > 0
            except ValueError:
                return True
    if scope.get("http_version", "1.1") in ("1.0", "1.1"):
        return False  # HTTP/1: no Content-Length and no Transfer-Encoding means no body
    # HTTP/2 and /3 may stream a body without a Content-Length; assume none for the methods
    # that normally have none (if one comes anyway, the watcher forwards it untouched)
    return scope.get("method") not in ("GET", "HEAD", "OPTIONS", "DELETE")


class _RequestWatch:
    """Wraps ``receive``/``send`` of one HTTP request to notice the client going away."""

    def __init__(self, receive: Receive, send: Send, token: CancellationToken, scope: Scope):
        self._receive = receive
        self._send = send
        self._token = token
        self._app_reads = _has_body(scope)  # the app reads the body; afterwards the watcher
        self._body_done = anyio.Event()
        if not self._app_reads:
            self._body_done.set()
        self._buffer: deque[Message] = deque()
        self._changed = anyio.Event()
        self.disconnected = False
        self.response_started = False
        self.response_complete = False

    def _notify(self) -> None:
        event, self._changed = self._changed, anyio.Event()
        event.set()

    def _on_disconnect(self) -> None:
        if self.disconnected:
            return
        self.disconnected = True
        if not self.response_complete:
            self._token.cancel_sync(CancellationReason.SIGNAL, CLIENT_DISCONNECTED)
        self._notify()

    async def receive(self) -> Message:
        """The ``receive`` given to the app."""
        if self._app_reads:
            message = await self._receive()
            kind = message.get("type")
            if kind == "http.disconnect":
                self._app_reads = False
                self._body_done.set()
                self._on_disconnect()
            elif kind == "http.request" and not message.get("more_body", False):
                self._app_reads = False
                self._body_done.set()
            return message
        while True:
            if self._buffer:
                return self._buffer.popleft()
            if self.disconnected:
                return {"type": "http.disconnect"}
            await self._changed.wait()

    async def send(self, message: Message) -> None:
        """The ``send`` given to the app."""
        kind = message.get("type")
        if kind == "http.response.start":
            self.response_started = True
        elif kind == "http.response.body" and not message.get("more_body", False):
            self.response_complete = True
        await self._send(message)

    async def watch(self) -> None:
        """Watcher task: the only reader of ``receive`` once the request body is complete."""
        await self._body_done.wait()
        while not self.disconnected:
            message = await self._receive()
            if message.get("type") == "http.disconnect":
                self._on_disconnect()
                return
            self._buffer.append(message)
            self._notify()


class RequestCancellationMiddleware:
    """Pure ASGI middleware making every HTTP request a cancellable operation.

    Args:
        app: the ASGI application.
        default_timeout: seconds (or ``timedelta``) after which a request is cancelled
            (``504 Request timeout`` if its response has not started yet; a response that
            is already streaming is cut off). ``None``: no deadline.

    For each ``http`` request: ``scope["cancellation_token"]`` is a fresh
    :class:`CancellationToken`, cancelled with reason ``SIGNAL`` and message
    ``"Client disconnected"`` when the client goes away, or with reason ``TIMEOUT`` when
    ``default_timeout`` passes before the response is complete;
    ``scope["cancellation_operation"]`` is the request's :class:`Cancellable` (named
    ``"{METHOD} {path}"``, linked to the token), which runs the app: a disconnect or the
    deadline cancels the whole request handling, whatever the endpoint uses. Operations made
    by :func:`cancellable_dependency` are linked to the same token and record its reason.
    Other scope types (``websocket``, ``lifespan``) pass through untouched.
    """

    def __init__(self, app: ASGIApp, default_timeout: float | None = None) -> None:
        """Wrap ``app``; see the class docstring."""
        if not callable(app):
            raise TypeError(f"app must be an ASGI callable, not {type(app).__name__}")
        self.app = app
        self.default_timeout = _check_timeout(default_timeout, "default_timeout")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        token = CancellationToken()
        scope[TOKEN_KEY] = token
        watch = _RequestWatch(receive, send, token, scope)
        op = Cancellable.with_token(
            token,
            name=f"{scope.get('method', '?')} {scope.get('path', '')}",
            metadata={"method": scope.get("method"), "path": scope.get("path")},
        )
        scope[OPERATION_KEY] = op
        cancel_exc = _cancel_exc_class()
        error: BaseException | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.watch)
            if self.default_timeout is not None:
                tg.start_soon(self._deadline, watch, token)
            try:
                try:
                    async with op:
                        await self.app(scope, watch.receive, watch.send)
                except cancel_exc:
                    reason = _own_cancel_reason(op)
                    if reason is None or await _outer_cancel_pending():
                        raise
                    await self._answer_cancelled(watch, reason)
            except Exception as exc:
                # raised after the task group, so that it is not wrapped in an ExceptionGroup
                error = exc
            finally:
                tg.cancel_scope.cancel()
        if error is not None:
            try:
                raise error
            finally:
                error = None

    async def _deadline(self, watch: _RequestWatch, token: CancellationToken) -> None:
        """Cancel the request token with reason TIMEOUT at ``default_timeout``."""
        await anyio.sleep(self.default_timeout or 0)
        if not watch.response_complete:
            token.cancel_sync(
                CancellationReason.TIMEOUT, f"Request timed out after {self.default_timeout}s"
            )

    @staticmethod
    async def _answer_cancelled(watch: _RequestWatch, reason: CancellationReason) -> None:
        """Answer a request cancelled by its own token/deadline (if no response started)."""
        if watch.response_started:
            return  # a partial response: returning incomplete makes the server close it
        if reason is CancellationReason.TIMEOUT:
            status, detail = 504, "Request timeout"
        elif watch.disconnected:
            status, detail = 503, "Client closed connection"
        else:
            status, detail = 503, "Request cancelled"
        body = json.dumps({"detail": detail}).encode()
        try:
            await watch.send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await watch.send({"type": "http.response.body", "body": body, "more_body": False})
        except Exception:  # the client is gone; servers differ in how they refuse
            logger.debug("could not send the cancellation answer", exc_info=True)


def get_request_token(request: Request) -> CancellationToken:
    """The request's :class:`CancellationToken` (created and stored in the scope if missing).

    With :class:`RequestCancellationMiddleware` installed it is cancelled when the client
    disconnects.
    """
    token = request.scope.get(TOKEN_KEY)
    if not isinstance(token, CancellationToken):
        token = CancellationToken()
        request.scope[TOKEN_KEY] = token
    return token


async def cancellable_dependency(request: Request, timeout: float | None = None) -> Cancellable:
    """A request-scoped :class:`Cancellable` (not entered yet: ``async with`` it).

    It is cancelled when the client disconnects (through the request token) and when
    ``timeout`` seconds have passed since it was entered. Name ``"{METHOD} {path}"``,
    metadata ``method``, ``path``, ``client`` (the client host or ``None``).

    Used as ``Depends(cancellable_dependency)``, FastAPI exposes ``timeout`` as an optional
    query parameter; use ``Depends(request_cancellable(timeout=...))`` to fix it server-side.
    """
    if not isinstance(request, Request):
        raise TypeError(f"request must be a starlette Request, not {type(request).__name__}")
    seconds = _check_timeout(timeout) if timeout else None
    token = get_request_token(request)
    method = request.method
    path = request.url.path
    metadata = {
        "method": method,
        "path": path,
        "client": request.client.host if request.client else None,
    }
    op = Cancellable.with_token(token, name=f"{method} {path}", metadata=metadata)
    if seconds is not None:
        op.add_source(TimeoutSource(seconds))
    return op


def request_cancellable(
    timeout: float | None = None,
) -> Callable[[Request], Awaitable[Cancellable]]:
    """A FastAPI dependency giving :func:`cancellable_dependency` a fixed ``timeout``.

    ``op: Cancellable = Depends(request_cancellable(timeout=5))``.
    """
    seconds = _check_timeout(timeout)

    async def dependency(request: Request) -> Cancellable:
        return await cancellable_dependency(request, seconds)

    return dependency


def _find_request_param(sig: inspect.Signature) -> str | None:
    for param in sig.parameters.values():
        annotation = param.annotation
        if isinstance(annotation, type) and issubclass(annotation, Request):
            return param.name
        if isinstance(annotation, str) and annotation.rsplit(".", 1)[-1] == "Request":
            return param.name
    if "request" in sig.parameters:
        return "request"
    return None


_INJECTED_REQUEST = "cancellation_request__"


def with_cancellation(
    timeout: float | None = None, raise_on_cancel: bool = True
) -> Callable[[F], F]:
    """Endpoint decorator: run the endpoint inside :func:`cancellable_dependency`'s operation.

    ``functools.wraps`` is applied and FastAPI sees the endpoint's own signature; an endpoint
    without a ``Request`` parameter gets a hidden one. Inside, :func:`current_operation`
    returns the operation. When the operation's own timeout fires -> ``HTTPException(504,
    "Request timeout")``; when the client disconnected -> ``HTTPException(503, "Client
    closed connection")``; another cancellation of the request token ->
    ``HTTPException(503, "Request cancelled: {message}")``. With ``raise_on_cancel=False``
    (and for any cancellation coming from outside the request) the native cancel exception
    propagates.
    """
    seconds = _check_timeout(timeout)
    if not isinstance(raise_on_cancel, bool):
        raise TypeError(f"raise_on_cancel must be a bool, not {type(raise_on_cancel).__name__}")

    def decorator(func: F) -> F:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"with_cancellation() needs an async endpoint, got {func!r}")
        sig = inspect.signature(func)
        request_param = _find_request_param(sig)

        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            request: Any
            if request_param is None:
                request = kwargs.pop(_INJECTED_REQUEST, None)
            elif request_param in kwargs:
                request = kwargs[request_param]
            else:
                try:
                    request = sig.bind_partial(*args, **kwargs).arguments.get(request_param)
                except TypeError:
                    request = None
            if not isinstance(request, Request):
                request = next((a for a in args if isinstance(a, Request)), None)
            if request is None:
                raise TypeError(
                    f"{func.__qualname__}: with_cancellation() needs the starlette Request "
                    "(call the endpoint through FastAPI or pass the request)"
                )
            op = await cancellable_dependency(request, seconds)
            try:
                async with op:
                    return await func(*args, **kwargs)
            except _cancel_exc_class():
                reason = _own_cancel_reason(op)
                if not raise_on_cancel or reason is None or await _outer_cancel_pending():
                    raise
                raise _http_error(reason, op.context.cancel_message) from None

        if request_param is None:
            extra = inspect.Parameter(
                _INJECTED_REQUEST, inspect.Parameter.KEYWORD_ONLY, annotation=Request
            )
            params = list(sig.parameters.values())
            var_kw = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
            rest = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
            wrapper.__signature__ = sig.replace(  # type: ignore[attr-defined]
                parameters=[*rest, extra, *var_kw]
            )
        return wrapper  # type: ignore[return-value]

    return decorator


def _http_error(reason: CancellationReason, message: str | None) -> HTTPException:
    if reason is CancellationReason.TIMEOUT:
        return HTTPException(status_code=504, detail="Request timeout")
    if reason is CancellationReason.SIGNAL and message == CLIENT_DISCONNECTED:
        return HTTPException(status_code=503, detail="Client closed connection")
    return HTTPException(status_code=503, detail=f"Request cancelled: {message or reason.value}")


class CancellableStreamingResponse(StreamingResponse):
    """A ``StreamingResponse`` whose body is produced inside a :class:`Cancellable`.

    If the operation has not been entered yet, it is entered for the time of the streaming
    (so its timeout runs from the first byte); every item is checked against its token. When
    the operation's own cancellation stops the stream, the response ends cleanly: for
    ``text/event-stream`` after a final ``event: cancelled`` / ``data: Stream cancelled``
    event. Cancellation from outside (client gone, server shutdown) propagates. The body
    generator is closed (``aclose``) in every case.
    """

    def __init__(
        self,
        content: AsyncIterable[Any],
        cancellable: Cancellable,
        media_type: str | None = "text/plain",
        **kwargs: Any,
    ) -> None:
        """Stream ``content`` inside ``cancellable``; ``kwargs`` go to ``StreamingResponse``."""
        if not isinstance(cancellable, Cancellable):
            raise TypeError(f"cancellable must be a Cancellable, not {type(cancellable).__name__}")
        if not isinstance(content, AsyncIterable):
            raise TypeError(f"content must be an async iterable, not {type(content).__name__}")
        self.cancellable = cancellable
        self._content = content
        super().__init__(cancellable.stream(aiter(content)), media_type=media_type, **kwargs)

    async def stream_response(self, send: Send) -> None:
        """Send the body; see the class docstring."""
        op = self.cancellable
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            if op.status is OperationStatus.PENDING:
                async with op:
                    await super().stream_response(tracking_send)
            else:
                await super().stream_response(tracking_send)
        except (_cancel_exc_class(), CancellationError):
            own = _own_cancel_reason(op) is not None or op.token.is_cancelled
            if not own or await _outer_cancel_pending():
                raise
            if not started:
                await send(
                    {
                        "type": "http.response.start",
                        "status": self.status_code,
                        "headers": self.raw_headers,
                    }
                )
            if (self.media_type or "").startswith("text/event-stream"):
                await send(
                    {"type": "http.response.body", "body": _SSE_CANCELLED, "more_body": True}
                )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await _shielded(self._close_iterators)

    async def _close_iterators(self) -> None:
        for iterator in (self.body_iterator, self._content):
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:  # pragma: no cover - a generator failing in its finally
                    pass


async def cancellable_streaming_response(
    generator: AsyncIterator[Any],
    cancellable: Cancellable,
    media_type: str = "text/plain",
    chunk_size: int | None = None,
) -> StreamingResponse:
    """A :class:`CancellableStreamingResponse` over ``generator`` (0.1 signature).

    ``chunk_size`` is accepted for compatibility and unused (items are sent as produced).
    """
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0
    ):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    return CancellableStreamingResponse(generator, cancellable, media_type=media_type)


class CancellableWebSocket:
    """A WebSocket whose operations check a :class:`Cancellable`'s token first.

    Attributes ``websocket`` and ``cancellable``. ``accept`` reports progress
    ``"WebSocket connected"``, ``close`` ``"WebSocket closed"``; ``send_*``/``receive_*``
    raise the native cancel exception (``check_async``) once the token is cancelled. Run the
    session inside ``async with cancellable:`` to interrupt a pending receive as well.
    """

    def __init__(self, websocket: WebSocket, cancellable: Cancellable) -> None:
        """Wrap ``websocket``."""
        if not isinstance(cancellable, Cancellable):
            raise TypeError(f"cancellable must be a Cancellable, not {type(cancellable).__name__}")
        self.websocket = websocket
        self.cancellable = cancellable

    async def _check(self) -> None:
        await self.cancellable.token.check_async()

    async def accept(self, **kwargs: Any) -> None:
        """Accept the connection."""
        await self.websocket.accept(**kwargs)
        await self.cancellable.report_progress("WebSocket connected")

    async def send_text(self, data: str) -> None:
        """Send a text message."""
        await self._check()
        await self.websocket.send_text(data)

    async def send_json(self, data: Any) -> None:
        """Send a JSON message."""
        await self._check()
        await self.websocket.send_json(data)

    async def receive_text(self) -> str:
        """Receive a text message."""
        await self._check()
        return await self.websocket.receive_text()

    async def receive_json(self) -> Any:
        """Receive a JSON message."""
        await self._check()
        return await self.websocket.receive_json()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection."""
        await self.websocket.close(code=code, reason=reason)
        await self.cancellable.report_progress("WebSocket closed")
