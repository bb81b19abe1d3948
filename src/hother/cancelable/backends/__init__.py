"""Backend layer: one interface (:class:`AsyncBackend`), two implementations.

* ``"asyncio"``: native asyncio (uvloop included), cancel scopes from the C engine, never
  imports anyio;
* ``"anyio"``: delegates to anyio, on asyncio or trio.

:func:`get_backend` returns the backend serving the calling code (see
:func:`detect_backend`); the implementation modules are imported lazily, on first use.
"""

from __future__ import annotations

import threading

from .base import AsyncBackend
from .detection import (
    BackendDetectionError,
    BackendType,
    NoAsyncContextError,
    UnsupportedBackendError,
    detect_backend,
    forced_backend,
    use_backend,
)

__all__ = [
    "AsyncBackend",
    "BackendDetectionError",
    "BackendType",
    "NoAsyncContextError",
    "UnsupportedBackendError",
    "detect_backend",
    "forced_backend",
    "get_backend",
    "use_backend",
]

_backends: dict[str, AsyncBackend] = {}
_create_lock = threading.Lock()


def _create(backend_type: object) -> AsyncBackend:
    if not isinstance(backend_type, str):
        raise TypeError(
            f"backend_type must be 'asyncio', 'anyio' or None, got {type(backend_type).__name__}"
        )
    with _create_lock:
        backend = _backends.get(backend_type)
        if backend is not None:
            return backend
        if backend_type == "asyncio":
            from .asyncio_backend import AsyncioBackend

            backend = AsyncioBackend()
        elif backend_type == "anyio":
            from .anyio_backend import AnyioBackend

            backend = AnyioBackend()
        else:
            raise ValueError(
                f"backend_type must be 'asyncio', 'anyio' or None, got {backend_type!r}"
            )
        _backends[backend_type] = backend
        return backend


def get_backend(backend_type: BackendType | None = None) -> AsyncBackend:
    """The backend instance for ``backend_type`` (``None``: :func:`detect_backend`).

    One instance per type, created lazily (the implementation module is imported on first
    use) and thread-safely. When it detects the backend (``backend_type`` None), the backend
    also remembers the caller's event loop / trio run for
    :meth:`AsyncBackend.call_soon_threadsafe` calls from plain threads.

    :raises TypeError: ``backend_type`` is not a str / None.
    :raises ValueError: ``backend_type`` is not ``"asyncio"`` / ``"anyio"``.
    :raises NoAsyncContextError: ``backend_type`` is None and no async library runs.
    """
    if backend_type is None:
        backend_type = detect_backend()
        detected = True
    else:
        detected = False
    try:
        backend = _backends[backend_type]
    except (KeyError, TypeError):
        backend = _create(backend_type)
    if detected:
        # Remember the caller's loop / trio run for call_soon_threadsafe from plain threads.
        backend.note_loop()
    return backend


def _cached_backend(backend_type: str) -> AsyncBackend | None:
    """The already created backend of ``backend_type``, without creating one."""
    return _backends.get(backend_type)
