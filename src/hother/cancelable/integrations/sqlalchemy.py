"""SQLAlchemy 2 (asyncio) integration: database work that stops cleanly when cancelled.

* :class:`CancellableAsyncSession` wraps an ``AsyncSession``: **every** operation first checks
  the operation's token (an attribute read: cheap), and progress ``Database operations: {n}``
  is reported every ``check_interval`` operations.
* :func:`cancellable_session` -- ``async with cancellable_session(engine, op) as session``:
  commits after a clean block; on any exception (the native cancel exception included) rolls
  back **shielded** (an outer cancellation cannot cut the rollback short) and re-raises; the
  session is always closed, so its connection goes back to the pool usable.
* :class:`CancellableTransaction`, :func:`execute_chunked`, result wrappers
  (:class:`CancellableAsyncResult`, :class:`CancellableScalarResult`,
  :class:`CancellableAsyncScalarResult`).

In-flight statements are interrupted by the enclosing :class:`Cancellable`'s scope (run the
session inside ``async with op:``); the token check before each operation covers a token
cancelled meanwhile. SQLAlchemy invalidates (terminates) a connection whose statement was
interrupted, but that alone leaves the statement running: on **PostgreSQL** on the server
(the driver's own cancel request dies with the terminated connection), with **aiosqlite**
in its worker thread. The session then stops it (shielded): ``pg_cancel_backend`` for that
backend through a fresh connection, or aiosqlite's ``interrupt()``. (To find the backend,
each statement-emitting call on these two dialects first asks the session for its
connection: one extra greenlet hop, no database round trip.)

SQLAlchemy's async engine runs on asyncio only (asyncio, uvloop, anyio on asyncio); not on
trio.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import anyio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from ..core.cancellable import Cancellable
from . import _shielded

__all__ = [
    "CancellableAsyncResult",
    "CancellableAsyncScalarResult",
    "CancellableAsyncSession",
    "CancellableScalarResult",
    "CancellableTransaction",
    "cancellable_session",
    "execute_chunked",
]

logger = logging.getLogger(__name__)

_BULK_BATCH = 1000
_CANCEL_QUERY = text(
    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid = :pid AND state <> 'idle'"
)


def _check_op(value: object) -> Cancellable | None:
    if value is not None and not isinstance(value, Cancellable):
        raise TypeError(f"cancellable must be a Cancellable or None, not {type(value).__name__}")
    return value


async def _check_token(op: Cancellable | None) -> None:
    """Raise the native cancel exception if ``op``'s token is cancelled.

    A checkpoint first: inside the running operation its (cancelled) scope raises the genuine
    native exception; outside it, ``check_async`` does.
    """
    if op is not None and op.token.is_cancelled:
        await anyio.lowlevel.checkpoint()
        await op.token.check_async()


class _Statement:
    """Where a statement runs, to stop it if SQLAlchemy abandons it mid-way.

    When a cancellation interrupts a DBAPI call, SQLAlchemy invalidates (terminates) the
    connection, but the statement itself can go on: on the PostgreSQL server (asyncpg's own
    cancel request dies with the terminated connection) or in aiosqlite's worker thread.
    """

    __slots__ = ("conn", "driver", "pid")

    def __init__(self, conn: AsyncConnection, driver: Any, pid: int | None) -> None:
        self.conn = conn
        self.driver = driver
        self.pid = pid

    def interrupt_thread(self) -> None:
        """aiosqlite: interrupt the statement running in the worker thread (no-op else)."""
        if self.pid is None:
            raw = getattr(self.driver, "_connection", None)  # the sqlite3.Connection
            if isinstance(raw, sqlite3.Connection):
                raw.interrupt()  # thread-safe; a no-op when nothing runs

    async def stop_if_abandoned(self) -> None:
        """Stop the statement if SQLAlchemy dropped its connection mid-statement."""
        if not self.conn.invalidated:
            return  # the connection is intact: no statement of ours can still run
        try:
            if self.pid is not None:  # PostgreSQL: cancel it on the server
                async with self.conn.engine.connect() as other:
                    await other.execute(_CANCEL_QUERY, {"pid": self.pid})
            else:
                self.interrupt_thread()
        except Exception:
            logger.warning("could not stop an abandoned statement", exc_info=True)


async def _settle(task: asyncio.Future[Any]) -> None:
    """Wait until ``task`` is done, whatever its outcome."""
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" warning


def _driver_pid(driver: Any) -> int | None:
    get_pid = getattr(driver, "get_server_pid", None)  # asyncpg
    if callable(get_pid):
        pid = get_pid()
        return pid if isinstance(pid, int) else None
    info = getattr(driver, "info", None)  # psycopg 3
    pid = getattr(info, "backend_pid", None)
    return pid if isinstance(pid, int) else None


class CancellableAsyncSession:
    """An ``AsyncSession`` whose operations honour a :class:`Cancellable`.

    Args:
        session: the ``AsyncSession``.
        cancellable: the operation (its token is checked before every operation; progress is
            reported to it). ``None``: a plain pass-through.
        check_interval: report ``Database operations: {n}`` every ``check_interval``
            operations (0.1 checked the token only that often; 0.2 checks every time).
    """

    def __init__(
        self,
        session: AsyncSession,
        cancellable: Cancellable | None = None,
        check_interval: int = 100,
    ) -> None:
        """Wrap ``session``; see the class docstring."""
        if not isinstance(session, AsyncSession):
            raise TypeError(f"session must be an AsyncSession, not {type(session).__name__}")
        if isinstance(check_interval, bool) or not isinstance(check_interval, int):
            raise TypeError(f"check_interval must be an int, not {type(check_interval).__name__}")
        if check_interval <= 0:
            raise ValueError(f"check_interval must be > 0, got {check_interval}")
        self.session = session
        self.cancellable = _check_op(cancellable)
        self.check_interval = check_interval
        self._operation_count = 0
        self._dialect_name: str | None = None

    # ------------------------------------------------------------------ plumbing
    async def _check_cancellation(self) -> None:
        op = self.cancellable
        if op is None:
            return
        self._operation_count += 1
        await _check_token(op)
        if self._operation_count % self.check_interval == 0:
            await op.report_progress(
                f"Database operations: {self._operation_count}",
                {"operation_count": self._operation_count},
            )

    def _dialect(self) -> str:
        if self._dialect_name is None:
            try:
                self._dialect_name = str(self.session.get_bind().dialect.name)
            except Exception:  # no single bind
                self._dialect_name = ""
        return self._dialect_name

    async def _statement(self) -> _Statement | None:
        dialect = self._dialect()
        if dialect not in ("postgresql", "sqlite"):
            return None
        conn = await self.session.connection()
        driver = (await conn.get_raw_connection()).driver_connection
        if dialect == "postgresql":
            pid = _driver_pid(driver)
            return _Statement(conn, driver, pid) if pid is not None else None
        if isinstance(getattr(driver, "_connection", None), sqlite3.Connection):
            return _Statement(conn, driver, None)  # aiosqlite
        return None

    async def _run(
        self, call: Callable[[], Awaitable[Any]], *, statement: bool = True, check: bool = True
    ) -> Any:
        """Check, then run one database call; stop it cleanly when cancelled.

        The call runs in its own task, awaited through ``asyncio.shield``: a cancellation
        reaches SQLAlchemy exactly once (``Task.cancel()``, as plain asyncio would deliver
        it) and SQLAlchemy's own cleanup -- invalidating and closing an interrupted
        connection -- then runs to its end, which a level-triggered cancel scope re-cancelling
        every await would cut short (leaving, e.g., aiosqlite close tasks that never finish).
        Meanwhile the statement is stopped where it runs (see :class:`_Statement`).
        """
        if check:
            await self._check_cancellation()
        where = await self._statement() if statement else None
        task = asyncio.ensure_future(call())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                task.cancel()
                if where is not None:
                    where.interrupt_thread()
                await _shielded(lambda: _settle(task))
            if where is not None:
                await _shielded(where.stop_if_abandoned)
            raise

    # ------------------------------------------------------------------ statements
    async def execute(
        self, statement: Any, params: Any = None, execution_options: Any = None, **kw: Any
    ) -> Any:
        """``AsyncSession.execute`` (checked)."""
        opts = {} if execution_options is None else execution_options
        return await self._run(
            lambda: self.session.execute(statement, params, execution_options=opts, **kw)
        )

    async def scalar(
        self, statement: Any, params: Any = None, execution_options: Any = None, **kw: Any
    ) -> Any:
        """``AsyncSession.scalar`` (checked); returns the value."""
        opts = {} if execution_options is None else execution_options
        return await self._run(
            lambda: self.session.scalar(statement, params, execution_options=opts, **kw)
        )

    async def scalars(
        self, statement: Any, params: Any = None, execution_options: Any = None, **kw: Any
    ) -> Any:
        """``AsyncSession.scalars`` (checked); returns SQLAlchemy's ``ScalarResult``."""
        opts = {} if execution_options is None else execution_options
        return await self._run(
            lambda: self.session.scalars(statement, params, execution_options=opts, **kw)
        )

    async def get(self, entity: Any, ident: Any, **kw: Any) -> Any:
        """``AsyncSession.get`` (checked)."""
        return await self._run(lambda: self.session.get(entity, ident, **kw))

    async def stream(
        self, statement: Any, params: Any = None, execution_options: Any = None, **kw: Any
    ) -> CancellableAsyncResult:
        """``AsyncSession.stream`` (checked), as a :class:`CancellableAsyncResult`."""
        opts = {} if execution_options is None else execution_options
        result = await self._run(
            lambda: self.session.stream(statement, params, execution_options=opts, **kw)
        )
        return CancellableAsyncResult(result, self.cancellable)

    async def stream_scalars(
        self, statement: Any, params: Any = None, execution_options: Any = None, **kw: Any
    ) -> CancellableAsyncScalarResult:
        """``AsyncSession.stream_scalars`` (checked), as a :class:`CancellableAsyncScalarResult`."""
        opts = {} if execution_options is None else execution_options
        result = await self._run(
            lambda: self.session.stream_scalars(statement, params, execution_options=opts, **kw)
        )
        return CancellableAsyncScalarResult(result, self.cancellable)

    async def flush(self, objects: Sequence[Any] | None = None) -> None:
        """``AsyncSession.flush`` (checked)."""
        await self._run(lambda: self.session.flush(objects))

    async def refresh(
        self,
        instance: Any,
        attribute_names: Any = None,
        with_for_update: Any = None,
    ) -> None:
        """``AsyncSession.refresh`` (checked)."""
        await self._run(
            lambda: self.session.refresh(
                instance, attribute_names=attribute_names, with_for_update=with_for_update
            )
        )

    async def merge(self, instance: Any, load: bool = True, options: Any = None) -> Any:
        """``AsyncSession.merge`` (checked)."""
        return await self._run(lambda: self.session.merge(instance, load=load, options=options))

    async def delete(self, instance: Any) -> None:
        """``AsyncSession.delete`` (checked)."""
        await self._run(lambda: self.session.delete(instance))

    async def run_sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``AsyncSession.run_sync`` (checked): ``fn(sync_session, *args, **kwargs)``."""
        return await self._run(lambda: self.session.run_sync(fn, *args, **kwargs))

    # ------------------------------------------------------------------ transaction
    async def commit(self) -> None:
        """Check, report ``Committing transaction``, commit."""
        await self._check_cancellation()
        if self.cancellable is not None:
            await self.cancellable.report_progress("Committing transaction")
        await self._run(self.session.commit, statement=False, check=False)

    async def rollback(self) -> None:
        """Report ``Rolling back transaction``, roll back (shielded; not checked)."""
        if self.cancellable is not None:
            await self.cancellable.report_progress("Rolling back transaction")
        await _shielded(self.session.rollback)

    async def close(self) -> None:
        """Close the session (shielded): its connection returns to the pool."""
        await _shielded(self.session.close)

    # ------------------------------------------------------------------ bulk
    async def _bulk(
        self, what: str, done: str, mappings: Sequence[dict[str, Any]], call: Callable[..., Any]
    ) -> None:
        if not isinstance(mappings, Sequence) or isinstance(mappings, str | bytes):
            raise TypeError(f"mappings must be a list of dicts, not {type(mappings).__name__}")
        op = self.cancellable
        if op is not None:
            await op.report_progress(f"Starting bulk {what} of {len(mappings)} records")
        for k, start in enumerate(range(0, len(mappings), _BULK_BATCH), 1):
            batch = list(mappings[start : start + _BULK_BATCH])
            await self._run(functools.partial(self.session.run_sync, call, batch))
            if op is not None:
                await op.report_progress(f"{done} batch {k}: {len(batch)} records")

    async def bulk_insert_mappings(
        self,
        mapper: Any,
        mappings: Sequence[dict[str, Any]],
        return_defaults: bool = False,
        render_nulls: bool = False,
    ) -> None:
        """``Session.bulk_insert_mappings`` in batches of 1000 (each checked), via ``run_sync``."""
        await self._bulk(
            "insert",
            "Inserted",
            mappings,
            lambda s, batch: s.bulk_insert_mappings(mapper, batch, return_defaults, render_nulls),
        )

    async def bulk_update_mappings(self, mapper: Any, mappings: Sequence[dict[str, Any]]) -> None:
        """``Session.bulk_update_mappings`` in batches of 1000 (each checked), via ``run_sync``."""
        await self._bulk(
            "update",
            "Updated",
            mappings,
            lambda s, batch: s.bulk_update_mappings(mapper, batch),
        )

    # ------------------------------------------------------------------ sync delegates
    def add(self, instance: Any, _warn: bool = True) -> None:
        """``AsyncSession.add``."""
        self.session.add(instance, _warn=_warn)

    def add_all(self, instances: Any) -> None:
        """``AsyncSession.add_all``."""
        self.session.add_all(instances)

    def expunge(self, instance: Any) -> None:
        """``AsyncSession.expunge``."""
        self.session.expunge(instance)

    def expunge_all(self) -> None:
        """``AsyncSession.expunge_all``."""
        self.session.expunge_all()

    @property
    def dirty(self) -> Any:
        """``AsyncSession.dirty``."""
        return self.session.dirty

    @property
    def deleted(self) -> Any:
        """``AsyncSession.deleted``."""
        return self.session.deleted

    @property
    def new(self) -> Any:
        """``AsyncSession.new``."""
        return self.session.new

    @property
    def is_active(self) -> bool:
        """``AsyncSession.is_active``."""
        return self.session.is_active

    def __contains__(self, instance: object) -> bool:
        return instance in self.session


class CancellableAsyncResult:
    """An ``AsyncResult`` checked against the token on every row.

    Async iteration reports ``Processed {n} rows`` every 1000 rows; ``fetchall``,
    ``fetchone``, ``first``, ``partitions`` and ``scalars`` are checked too.
    """

    def __init__(self, result: Any, cancellable: Cancellable | None) -> None:
        """Wrap ``result`` (an ``AsyncResult``)."""
        self.result = result
        self.cancellable = _check_op(cancellable)
        self._count = 0

    def __aiter__(self) -> CancellableAsyncResult:
        return self

    async def __anext__(self) -> Any:
        await _check_token(self.cancellable)
        row = await self.result.__anext__()
        self._count += 1
        if self.cancellable is not None and self._count % 1000 == 0:
            await self.cancellable.report_progress(
                f"Processed {self._count} rows", {"rows": self._count}
            )
        return row

    async def fetchall(self) -> Sequence[Any]:
        """All remaining rows."""
        await _check_token(self.cancellable)
        return await self.result.fetchall()  # type: ignore[no-any-return]

    async def fetchone(self) -> Any:
        """The next row or ``None``."""
        await _check_token(self.cancellable)
        return await self.result.fetchone()

    async def first(self) -> Any:
        """The first row or ``None`` (closes the result)."""
        await _check_token(self.cancellable)
        return await self.result.first()

    async def partitions(self, size: int | None = None) -> AsyncIterator[Sequence[Any]]:
        """Rows in lists of ``size`` (checked before each)."""
        async for partition in self.result.partitions(size):
            await _check_token(self.cancellable)
            yield partition

    def scalars(self, index: int = 0) -> CancellableAsyncScalarResult:
        """The ``index``-th column, as a :class:`CancellableAsyncScalarResult`."""
        return CancellableAsyncScalarResult(self.result.scalars(index), self.cancellable)

    async def close(self) -> None:
        """Close the result."""
        await self.result.close()


class CancellableScalarResult:
    """A (synchronous, already-fetched) ``ScalarResult`` with token-checked accessors.

    The accessors are coroutines (0.1 API) that check the token, then call the synchronous
    method (0.1 awaited the synchronous methods, which failed).
    """

    def __init__(self, result: Any, cancellable: Cancellable | None) -> None:
        """Wrap ``result`` (a ``ScalarResult``)."""
        self.result = result
        self.cancellable = _check_op(cancellable)

    async def all(self) -> Sequence[Any]:
        """All values."""
        await _check_token(self.cancellable)
        return self.result.all()  # type: ignore[no-any-return]

    async def first(self) -> Any:
        """The first value or ``None``."""
        await _check_token(self.cancellable)
        return self.result.first()

    async def one(self) -> Any:
        """Exactly one value (raises otherwise)."""
        await _check_token(self.cancellable)
        return self.result.one()

    async def one_or_none(self) -> Any:
        """One value or ``None`` (raises for several)."""
        await _check_token(self.cancellable)
        return self.result.one_or_none()


class CancellableAsyncScalarResult:
    """An ``AsyncScalarResult`` checked on every item (``Processed {n} scalars`` per 1000)."""

    def __init__(self, result: Any, cancellable: Cancellable | None) -> None:
        """Wrap ``result`` (an ``AsyncScalarResult``)."""
        self.result = result
        self.cancellable = _check_op(cancellable)
        self._count = 0

    def __aiter__(self) -> CancellableAsyncScalarResult:
        return self

    async def __anext__(self) -> Any:
        await _check_token(self.cancellable)
        value = await self.result.__anext__()
        self._count += 1
        if self.cancellable is not None and self._count % 1000 == 0:
            await self.cancellable.report_progress(
                f"Processed {self._count} scalars", {"scalars": self._count}
            )
        return value

    async def all(self) -> Sequence[Any]:
        """All remaining values."""
        await _check_token(self.cancellable)
        return await self.result.all()  # type: ignore[no-any-return]

    async def first(self) -> Any:
        """The first value or ``None``."""
        await _check_token(self.cancellable)
        return await self.result.first()


async def _rollback_quietly(session: AsyncSession, op: Cancellable, exc: BaseException) -> None:
    try:
        await op.report_progress(f"Rolling back transaction: {type(exc).__name__}")
        await session.rollback()
    except Exception:
        logger.exception("rollback failed")


@contextlib.asynccontextmanager
async def cancellable_session(
    engine: AsyncEngine | AsyncConnection, cancellable: Cancellable, **session_kwargs: Any
) -> AsyncIterator[CancellableAsyncSession]:
    """A :class:`CancellableAsyncSession` on a new ``AsyncSession(engine, ...)``.

    ``expire_on_commit`` defaults to ``False``. Commits after a clean block; on any exception
    (the native cancel exception, ``SQLAlchemyError``, anything else) rolls back shielded --
    nothing of the block stays written -- and re-raises. The session is always closed
    (shielded), returning its connection to the pool.
    """
    if not isinstance(engine, AsyncEngine | AsyncConnection):
        raise TypeError(f"engine must be an AsyncEngine, not {type(engine).__name__}")
    if not isinstance(cancellable, Cancellable):
        raise TypeError(f"cancellable must be a Cancellable, not {type(cancellable).__name__}")
    session_kwargs.setdefault("expire_on_commit", False)
    session = AsyncSession(engine, **session_kwargs)
    wrapped = CancellableAsyncSession(session, cancellable)
    try:
        try:
            yield wrapped
            await wrapped.commit()
        except BaseException as exc:
            # every exception: a cancellation, a SQLAlchemyError or any other error
            await _shielded(functools.partial(_rollback_quietly, session, cancellable, exc))
            raise
    finally:
        await _shielded(session.close)


class CancellableTransaction:
    """``async with CancellableTransaction(session, nested=False):`` -- begin, then commit or
    roll back.

    Reports ``Beginning transaction`` (`` (nested)``); on a clean exit checks the token
    (cancelled: roll back and raise) and commits (``Committing transaction``); on an
    exception rolls back shielded (``Rolling back transaction: {ExceptionName}``). Never
    suppresses an exception.
    """

    def __init__(self, session: CancellableAsyncSession, nested: bool = False) -> None:
        """Prepare a transaction on ``session``."""
        if not isinstance(session, CancellableAsyncSession):
            raise TypeError(
                f"session must be a CancellableAsyncSession, not {type(session).__name__}"
            )
        self.session = session
        self.nested = bool(nested)
        self._tx: Any = None

    async def _report(self, message: str) -> None:
        if self.session.cancellable is not None:
            await self.session.cancellable.report_progress(message)

    async def __aenter__(self) -> CancellableTransaction:
        await self._report("Beginning transaction" + (" (nested)" if self.nested else ""))
        await self.session._check_cancellation()
        raw = self.session.session
        self._tx = await (raw.begin_nested() if self.nested else raw.begin())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: Any, tb: Any) -> bool:
        tx = self._tx
        if exc_type is None:
            try:
                await _check_token(self.session.cancellable)
            except BaseException as cancel:
                await self._report(f"Rolling back transaction: {type(cancel).__name__}")
                await _shielded(tx.rollback)
                raise
            await self._report("Committing transaction")
            await self.session._run(tx.commit, statement=False, check=False)
            return False
        await self._report(f"Rolling back transaction: {exc_type.__name__}")
        try:
            await _shielded(tx.rollback)
        except Exception:
            logger.exception("rollback failed")
        return False


async def execute_chunked(
    session: CancellableAsyncSession,
    query: Any,
    chunk_size: int = 1000,
    process_chunk: Callable[[Sequence[Any]], Any] | None = None,
) -> int:
    """Run ``query`` page by page (LIMIT/OFFSET, ``chunk_size`` rows); return the row count.

    Each page is checked against the token, its scalars handed to ``process_chunk`` (sync
    or async), and ``Processed {total} rows`` reported (``chunk_size``, ``offset``); stops
    at an empty or short page. Give the query an ``ORDER BY`` for stable pages.
    """
    if not isinstance(session, CancellableAsyncSession):
        raise TypeError(f"session must be a CancellableAsyncSession, not {type(session).__name__}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if process_chunk is not None and not callable(process_chunk):
        raise TypeError(f"process_chunk must be callable, not {type(process_chunk).__name__}")
    op = session.cancellable
    total = 0
    offset = 0
    while True:
        result = await session.execute(query.limit(chunk_size).offset(offset))
        rows = result.scalars().all()
        if not rows:
            break
        if process_chunk is not None:
            outcome = process_chunk(rows)
            if inspect.isawaitable(outcome):
                await outcome
        total += len(rows)
        if op is not None:
            await op.report_progress(
                f"Processed {total} rows", {"chunk_size": chunk_size, "offset": offset}
            )
        if len(rows) < chunk_size:
            break
        offset += chunk_size
    return total
