"""httpx integration: HTTP requests and downloads that a token or an operation can stop.

* :class:`CancellableHTTPClient` -- an ``httpx.AsyncClient`` wrapper. Its token (the ``token``
  given, else the operation's) is honoured while a request is in flight and while a streamed
  response is read: cancelling it from any task or thread interrupts the request / stream
  with the runtime's native cancel exception (``asyncio.CancelledError`` / ``trio.Cancelled``).
* :func:`download_file` -- streamed download to a file with progress reports and resume
  (``Range``), appending only when the server answers ``206 Partial Content``.

Works on asyncio (uvloop included) and trio: httpx/httpcore run on both, and file writes go
through anyio worker threads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx

from ..core.cancellable import Cancellable, current_operation
from ..core.token import CancellationToken

__all__ = ["CancellableHTTPClient", "download_file"]

_PROGRESS_EVERY = 100  # chunks between "Streaming data" reports
_WRITE_BUFFER = 256 * 1024  # bytes collected before a (threaded) file write


def _check_op(value: object, what: str = "cancellable") -> Cancellable | None:
    if value is not None and not isinstance(value, Cancellable):
        raise TypeError(f"{what} must be a Cancellable or None, not {type(value).__name__}")
    return value


class CancellableHTTPClient:
    """An ``httpx.AsyncClient`` whose requests honour a cancellation token.

    Args:
        cancellable: the operation requests report progress to (and whose token they
            honour unless ``token`` is given).
        token: the :class:`CancellationToken` to honour (default: the operation's token).
        **httpx_kwargs: passed to ``httpx.AsyncClient`` (created at once, as ``client``).

    A request made while the token is cancelled raises at once; a token cancelled while a
    request (or a stream read) is in flight interrupts it: the request runs inside a small
    :class:`Cancellable` linked to the token (skipped when the request already runs inside
    the operation whose token it is).
    """

    def __init__(
        self,
        cancellable: Cancellable | None = None,
        token: CancellationToken | None = None,
        **httpx_kwargs: Any,
    ) -> None:
        """Create the client; see the class docstring."""
        self.cancellable = _check_op(cancellable)
        if token is not None and not isinstance(token, CancellationToken):
            raise TypeError(
                f"token must be a CancellationToken or None, not {type(token).__name__}"
            )
        self.token: CancellationToken | None = (
            token if token is not None else (cancellable.token if cancellable is not None else None)
        )
        self.client: Any = httpx.AsyncClient(**httpx_kwargs)
        self._closed = False

    async def __aenter__(self) -> CancellableHTTPClient:
        """Enter the underlying client."""
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the underlying client."""
        await self.close()

    async def close(self) -> None:
        """Close the underlying client (once; later calls do nothing)."""
        if not self._closed:
            self._closed = True
            await self.client.aclose()

    # ------------------------------------------------------------------ token handling
    def _tokens(self, op: Cancellable | None) -> list[CancellationToken]:
        tokens: list[CancellationToken] = []
        if self.token is not None:
            tokens.append(self.token)
        if op is not None and op is not self.cancellable and op.token not in tokens:
            tokens.append(op.token)
        return tokens

    @classmethod
    async def _check(cls, tokens: list[CancellationToken]) -> None:
        """Raise the native cancel exception if one of ``tokens`` is already cancelled."""
        if any(token.is_cancelled for token in tokens):
            async with cls._guard(tokens, "cancelled"):
                await anyio.lowlevel.checkpoint()
            await _raise_if_cancelled(tokens)

    @staticmethod
    def _guard(
        tokens: list[CancellationToken], name: str
    ) -> contextlib.AbstractAsyncContextManager[Any]:
        """A scope interrupted when one of ``tokens`` is cancelled (none needed: no-op)."""
        running = current_operation()
        if running is not None:
            tokens = [t for t in tokens if t is not running.token]
        if not tokens:
            return contextlib.nullcontext()
        guard = Cancellable.with_token(tokens[0], name=name)
        for extra in tokens[1:]:
            guard = guard.combine(Cancellable.with_token(extra))
        return guard

    # ------------------------------------------------------------------ requests
    async def request(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        cancellable: Cancellable | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request (``kwargs`` go to ``httpx.AsyncClient.request``).

        Reports ``Starting {method} request to {url}``, then ``Completed {method} request``
        (``status_code``, ``url``) or, on an ``httpx.RequestError``,
        ``Request failed: {ExceptionName}`` (``error``) before re-raising.
        """
        if not isinstance(method, str):
            raise TypeError(f"method must be a str, not {type(method).__name__}")
        op = _check_op(cancellable) or self.cancellable
        tokens = self._tokens(op)
        await self._check(tokens)
        if op is not None:
            await op.report_progress(f"Starting {method} request to {url}")
        try:
            async with self._guard(tokens, f"{method} {url}"):
                response: httpx.Response = await self.client.request(method, url, **kwargs)
        except httpx.RequestError as exc:
            if op is not None:
                await op.report_progress(
                    f"Request failed: {type(exc).__name__}", {"error": str(exc)}
                )
            raise
        if op is not None:
            await op.report_progress(
                f"Completed {method} request",
                {"status_code": response.status_code, "url": str(response.url)},
            )
        return response

    async def get(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        """``request("GET", url, **kwargs)``."""
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        """``request("POST", url, **kwargs)``."""
        return await self.request("POST", url, **kwargs)

    async def put(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        """``request("PUT", url, **kwargs)``."""
        return await self.request("PUT", url, **kwargs)

    async def delete(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        """``request("DELETE", url, **kwargs)``."""
        return await self.request("DELETE", url, **kwargs)

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        cancellable: Cancellable | None = None,
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[httpx.Response]:
        """Stream a response: ``async with client.stream("GET", url) as response: ...``.

        ``raise_for_status()`` is called first. The response's ``aiter_bytes``,
        ``aiter_text``, ``aiter_raw`` and ``aiter_lines`` check the token before each chunk
        (``chunk_size`` is their default chunk size) and, with an operation, report
        ``Streaming data`` (``chunks``, ``bytes``) every 100 chunks. A token cancelled
        while the body of the ``async with`` waits for data interrupts it.
        """
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0
        ):
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        op = _check_op(cancellable) or self.cancellable
        tokens = self._tokens(op)
        await self._check(tokens)
        async with self._guard(tokens, f"{method} {url} (stream)"):
            async with self.client.stream(method, url, **kwargs) as response:
                response.raise_for_status()
                _wrap_iterators(response, op, tokens, chunk_size)
                yield response


async def _raise_if_cancelled(tokens: list[CancellationToken]) -> None:
    """Raise if a token is cancelled: a checkpoint first, so that the guarding scope (already
    cancelled through the token) raises the genuine native cancel exception."""
    for token in tokens:
        if token.is_cancelled:
            await anyio.lowlevel.checkpoint()
            await token.check_async()


def _wrap_iterators(
    response: httpx.Response,
    op: Cancellable | None,
    tokens: list[CancellationToken],
    chunk_size: int | None,
) -> None:
    state = {"chunks": 0, "bytes": 0}
    active = [0]  # httpx builds aiter_lines on aiter_text on aiter_bytes on aiter_raw

    def wrap(name: str, sized: bool) -> None:
        original: Callable[..., AsyncIterator[Any]] = getattr(response, name)

        async def checked(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            if active[0]:  # called by another wrapped iterator: that one checks and counts
                async for chunk in original(*args, **kwargs):
                    yield chunk
                return
            if sized and chunk_size is not None and not args and "chunk_size" not in kwargs:
                kwargs["chunk_size"] = chunk_size
            active[0] += 1
            try:
                async for chunk in original(*args, **kwargs):
                    if tokens:
                        await _raise_if_cancelled(tokens)
                    state["chunks"] += 1
                    state["bytes"] += len(chunk)
                    if op is not None and state["chunks"] % _PROGRESS_EVERY == 0:
                        await op.report_progress("Streaming data", dict(state))
                    yield chunk
            finally:
                active[0] -= 1

        setattr(response, name, checked)

    wrap("aiter_bytes", True)
    wrap("aiter_text", True)
    wrap("aiter_raw", True)
    wrap("aiter_lines", False)


def _content_range_total(value: str | None) -> int | None:
    """``N`` from a ``Content-Range: bytes */N`` (or ``bytes a-b/N``) header."""
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


async def download_file(
    url: str,
    output_path: str | os.PathLike[str],
    cancellable: Cancellable,
    chunk_size: int = 8192,
    resume: bool = True,
) -> int:
    """Download ``url`` to ``output_path``; return the file's final size in bytes.

    With ``resume`` and an existing non-empty file, asks for the rest with
    ``Range: bytes={size}-``: a ``206`` answer is appended; any other success answer is the
    whole resource, so the file is rewritten from the start (0.1 appended blindly); a
    ``416`` whose ``Content-Range`` total equals the file size means it is already
    complete. Progress: ``Starting download`` (``total_bytes``, ``resume_byte``; only when
    the size is known), ``Downloading: {pct:.1f}%`` per chunk (``downloaded_bytes``,
    ``total_bytes``, ``progress_percent``) or ``Downloading: {n} bytes`` when the size is
    unknown, and ``Download completed`` (``total_bytes``).

    Cancelling the operation's token (or its timeout, when the download runs inside it)
    stops the download with the native cancel exception; the bytes received so far stay in
    the file, so a later call resumes. The client class is looked up at call time
    (``CancellableHTTPClient`` of this module) and built as ``CancellableHTTPClient(cancellable)``.
    """
    if not isinstance(url, str | httpx.URL):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    if not isinstance(output_path, str | os.PathLike):
        raise TypeError(f"output_path must be a path, not {type(output_path).__name__}")
    if not isinstance(cancellable, Cancellable):
        raise TypeError(f"cancellable must be a Cancellable, not {type(cancellable).__name__}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    path = os.fspath(output_path)
    start = os.path.getsize(path) if resume and os.path.isfile(path) else 0

    client_class = globals()["CancellableHTTPClient"]
    async with client_class(cancellable) as client:
        if start > 0:
            try:
                return await _download(client, url, path, cancellable, chunk_size, start)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 416:
                    raise
                if _content_range_total(exc.response.headers.get("content-range")) == start:
                    await cancellable.report_progress("Download completed", {"total_bytes": start})
                    return start
        return await _download(client, url, path, cancellable, chunk_size, 0)


async def _download(
    client: Any, url: str, path: str, op: Cancellable, chunk_size: int, start: int
) -> int:
    headers = {"Range": f"bytes={start}-"} if start > 0 else {}
    async with client.stream("GET", url, headers=headers) as response:
        if start > 0 and response.status_code != 206:
            start = 0  # the server sent the whole resource: restart
        length = response.headers.get("content-length")
        total = start + int(length) if isinstance(length, str) and length.isdigit() else None
        if total is not None:
            await op.report_progress(
                "Starting download", {"total_bytes": total, "resume_byte": start}
            )
        downloaded = start
        buffer = bytearray()
        with open(path, "ab" if start > 0 else "wb") as file:
            try:
                async for chunk in response.aiter_bytes(chunk_size):
                    buffer += chunk
                    downloaded += len(chunk)
                    if len(buffer) >= _WRITE_BUFFER:
                        data, buffer = bytes(buffer), bytearray()
                        await anyio.to_thread.run_sync(file.write, data)
                    if total:
                        pct = downloaded * 100.0 / total
                        await op.report_progress(
                            f"Downloading: {pct:.1f}%",
                            {
                                "downloaded_bytes": downloaded,
                                "total_bytes": total,
                                "progress_percent": pct,
                            },
                        )
                    else:
                        await op.report_progress(
                            f"Downloading: {downloaded} bytes", {"downloaded_bytes": downloaded}
                        )
            finally:
                # keep what was received (also on cancellation): a later call resumes from it
                file.write(buffer)
    await op.report_progress("Download completed", {"total_bytes": downloaded})
    return downloaded
