"""Optional integrations of hother.cancelable with third-party libraries.

Modules (each imports its library at import time; ``import hother.cancelable`` imports none):

* :mod:`hother.cancelable.integrations.fastapi` -- FastAPI / Starlette (extra ``fastapi``);
* :mod:`hother.cancelable.integrations.httpx` -- httpx (extra ``httpx``);
* :mod:`hother.cancelable.integrations.sqlalchemy` -- SQLAlchemy 2 async (extra ``sqlalchemy``).

Nothing is re-exported here: import from the concrete modules. The private helpers below are
shared by those modules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ..core.cancellable import Cancellable
    from ..core.models import CancellationReason

T = TypeVar("T")

# Cleanup tasks that must outlive a raw ``task.cancel()`` of their awaiter (asyncio only).
_background_cleanups: set[asyncio.Task[Any]] = set()


def _library() -> str:
    import sniffio

    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return "asyncio"


def _cancel_exc_class() -> type[BaseException]:
    """The runtime's native cancel exception (``asyncio.CancelledError`` / ``trio.Cancelled``)."""
    if _library() == "trio":
        import trio

        return trio.Cancelled
    return asyncio.CancelledError


def _own_cancel_reason(op: Cancellable) -> CancellationReason | None:
    """Why ``op`` ended cancelled *by its own token or timeout*; ``None`` for anything else.

    An outer cancellation (an enclosing scope, a parent operation) is recorded as MANUAL or
    PARENT without the operation's token being cancelled: that is not ``op``'s own.
    """
    from ..core.models import CancellationReason

    if not op.is_cancelled:
        return None
    reason = op.context.cancel_reason
    if reason is None or reason is CancellationReason.PARENT:
        return None
    if op.token.is_cancelled or reason is CancellationReason.TIMEOUT:
        return reason
    return None


async def _outer_cancel_pending() -> bool:
    """True when the calling task is still being cancelled by something enclosing it.

    asyncio: a pending ``Task.cancel()`` (``cancelling() > 0``) or an effectively cancelled
    engine scope; every backend: a cancelled enclosing anyio/trio scope (checked with
    ``checkpoint_if_cancelled``, which delivers that cancellation here and reports it).
    """
    import anyio

    if _library() == "asyncio":
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            return True
        from .. import _engine

        scope = _engine.current_scope()
        if scope is not None and scope.effectively_cancelled:
            return True
    try:
        await anyio.lowlevel.checkpoint_if_cancelled()
    except anyio.get_cancelled_exc_class():
        return True
    return False


async def _shielded(fn: Callable[[], Awaitable[T]]) -> T:
    """Run the cleanup coroutine ``fn()`` protected from cancellation of the caller.

    Under trio / anyio: inside a shielded cancel scope. Under asyncio (whose ``Task.cancel()``
    no scope can refuse): in its own task, awaited through ``asyncio.shield`` inside a
    shielded scope of the backend; if the awaiting task is cancelled anyway, the cleanup still runs
    to its end in its task and the cancellation propagates.
    """
    from ..backends import get_backend

    backend = get_backend()
    if _library() != "asyncio":
        with backend.create_cancel_scope(shield=True):
            return await fn()

    async def run() -> T:
        return await fn()

    task = asyncio.ensure_future(run())
    _background_cleanups.add(task)
    task.add_done_callback(_background_cleanups.discard)
    with backend.create_cancel_scope(shield=True):
        return await asyncio.shield(task)


__all__: list[str] = []
