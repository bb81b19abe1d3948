"""Backend detection: which of our two backends serves the calling code.

Rules (in order):

1. ``use_backend("asyncio" | "anyio")`` active in the current context wins.
2. The environment variable ``HOTHER_CANCELABLE_BACKEND`` (``asyncio`` or ``anyio``); any
   other non-empty value raises :class:`BackendDetectionError` at detection time.
3. sniffio's answer: ``"asyncio"`` (uvloop included) -> ``"asyncio"``; ``"trio"`` -> ``"anyio"``.
   Any other async library raises :class:`UnsupportedBackendError` naming it. No async
   library running raises :class:`NoAsyncContextError`.

Forcing ``"asyncio"`` while running under trio is an error: the native asyncio backend
cannot drive a trio run.
"""

from __future__ import annotations

import asyncio.events
import contextvars
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import sniffio

BackendType = Literal["asyncio", "anyio"]
"""The two backends: ``"asyncio"`` (native asyncio on the C engine) and ``"anyio"`` (trio, or
asyncio when forced)."""
_VALID: tuple[BackendType, ...] = ("asyncio", "anyio")
ENV_VAR = "HOTHER_CANCELABLE_BACKEND"

_override: contextvars.ContextVar[BackendType | None] = contextvars.ContextVar(
    "hother_cancelable_backend_override", default=None
)


class BackendDetectionError(RuntimeError):
    """The backend could not be determined (base class of the detection errors)."""


class NoAsyncContextError(BackendDetectionError):
    """Detection was called where no async library is running."""


class UnsupportedBackendError(BackendDetectionError):
    """The running async library is neither asyncio nor trio."""


def _validate(name: object, what: str) -> BackendType:
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str ('asyncio' or 'anyio'), got {type(name).__name__}")
    if name not in _VALID:
        raise ValueError(f"{what} must be 'asyncio' or 'anyio', got {name!r}")
    return name


def _running_library() -> str:
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        # sniffio needs a current task; plain loop callbacks (call_soon, done callbacks,
        # call_soon_threadsafe) run on a loop with no task: that is still asyncio
        if asyncio.events._get_running_loop() is not None:
            return "asyncio"
        raise NoAsyncContextError(
            "hother.cancelable: no async library is running in this thread; backend "
            "detection needs to be called from inside asyncio or trio code "
            "(or use use_backend(...) / HOTHER_CANCELABLE_BACKEND together with a running loop)"
        ) from None


def detect_backend() -> BackendType:
    """Return the backend serving the current async context (see the module docstring)."""
    forced = _override.get()
    if forced is None:
        env = os.environ.get(ENV_VAR, "")
        if env:
            try:
                forced = _validate(env, f"environment variable {ENV_VAR}")
            except ValueError as exc:
                raise BackendDetectionError(str(exc)) from None
    library = _running_library()
    if library == "asyncio":
        return forced or "asyncio"
    if library == "trio":
        if forced == "asyncio":
            raise BackendDetectionError(
                "the asyncio backend was forced, but the running async library is trio; "
                "only the 'anyio' backend can run under trio"
            )
        return "anyio"
    raise UnsupportedBackendError(
        f"hother.cancelable does not support the async library {library!r}; "
        "supported: asyncio (including uvloop) and trio (through anyio)"
    )


@contextmanager
def use_backend(name: BackendType) -> Iterator[None]:
    """Force ``name`` as the backend for the current context (contextvar-scoped).

    Typical use: run the anyio backend on top of asyncio::

        with use_backend("anyio"):
            async with Cancellable.with_timeout(1): ...
    """
    backend = _validate(name, "name")
    token = _override.set(backend)
    try:
        yield
    finally:
        _override.reset(token)


def forced_backend() -> BackendType | None:
    """The backend forced by ``use_backend`` in this context, if any (environment ignored)."""
    return _override.get()
