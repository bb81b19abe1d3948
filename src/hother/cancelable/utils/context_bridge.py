"""Carry :mod:`contextvars` into OS threads (asyncio and trio).

:meth:`ContextBridge.run_in_thread_with_context` runs a blocking function in a worker
thread inside a *copy* of the caller's context: the function sees the caller's context
variables (e.g. :func:`~hother.cancelable.core.cancellable.current_operation`), and
whatever it sets stays in that copy, so nothing leaks into pooled worker threads or back
into the caller.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

import sniffio

from ..backends.detection import NoAsyncContextError, UnsupportedBackendError

__all__ = ["ContextBridge"]

T = TypeVar("T")


class ContextBridge:
    """Static helpers that carry context variables across threads."""

    @staticmethod
    def copy_context() -> dict[contextvars.ContextVar[Any], Any]:
        """Snapshot of the current context as a ``{ContextVar: value}`` dict."""
        return dict(contextvars.copy_context())

    @staticmethod
    def restore_context(context_dict: dict[contextvars.ContextVar[Any], Any]) -> None:
        """``var.set(value)`` for every entry, in the *current* context."""
        if not isinstance(context_dict, dict):
            raise TypeError(
                f"context_dict must be a dict of ContextVar to value, "
                f"got {type(context_dict).__name__}"
            )
        for var in context_dict:
            if not isinstance(var, contextvars.ContextVar):
                raise TypeError(
                    f"context_dict keys must be ContextVar objects, got {type(var).__name__}"
                )
        for var, value in context_dict.items():
            var.set(value)

    @staticmethod
    async def run_in_thread_with_context(
        func: Callable[..., T],
        *args: Any,
        executor: Executor | None = None,
        **kwargs: Any,
    ) -> T:
        """Run ``func(*args, **kwargs)`` in a worker thread inside a copy of this context.

        Works under asyncio (``loop.run_in_executor``; the loop's default executor when
        ``executor`` is None) and trio (``trio.to_thread.run_sync``, or ``executor`` when
        given). If the awaiting task is cancelled, the await ends at once with the backend
        cancel exception; the thread cannot be interrupted, it finishes in the background
        and its result is discarded.
        """
        if not callable(func):
            raise TypeError(f"func must be callable, got {type(func).__name__}")
        if executor is not None and not isinstance(executor, Executor):
            raise TypeError(
                f"executor must be a concurrent.futures.Executor or None, "
                f"got {type(executor).__name__}"
            )
        ctx = contextvars.copy_context()
        call: Callable[[], T] = functools.partial(ctx.run, func, *args, **kwargs)
        try:
            library = sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            raise NoAsyncContextError(
                "run_in_thread_with_context must be awaited from asyncio or trio code"
            ) from None
        if library == "asyncio":
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(executor, call)
        if library == "trio":
            return await _run_trio(call, executor)
        raise UnsupportedBackendError(
            f"run_in_thread_with_context supports asyncio and trio, not {library!r}"
        )


async def _run_trio(call: Callable[[], T], executor: Executor | None) -> T:
    import trio

    if executor is None:
        return await trio.to_thread.run_sync(call, abandon_on_cancel=True)
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def wake(_: Future[T]) -> None:
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:  # the run ended meanwhile: nobody waits any more
            pass

    future = executor.submit(call)
    future.add_done_callback(wake)
    try:
        await done.wait()
    except BaseException:
        future.cancel()
        raise
    return future.result()
