"""SQLAlchemy integration with real databases: aiosqlite (embedded) and PostgreSQL (asyncpg).

The PostgreSQL server is a private cluster started by ``scripts/postgres.sh`` (see conftest).
SQLAlchemy's async engine runs on asyncio only, so these tests run in the asyncio, uvloop and
anyio (on asyncio) modes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from sqlalchemy import Integer, String, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from hother.cancelable import Cancellable, CancellationReason, OperationStatus
from hother.cancelable.integrations.httpx import CancellableHTTPClient
from hother.cancelable.integrations.sqlalchemy import (
    CancellableAsyncResult,
    CancellableAsyncScalarResult,
    CancellableAsyncSession,
    CancellableScalarResult,
    CancellableTransaction,
    cancellable_session,
    execute_chunked,
)

pytestmark = pytest.mark.modes(
    "asyncio", "uvloop", "anyio", reason="SQLAlchemy's async engine runs on asyncio only"
)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "hc_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A database URL: a fresh aiosqlite file, or the test PostgreSQL server (asyncpg)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    dsn: str = request.getfixturevalue("postgres_dsn")
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    """A fresh aiosqlite database file."""
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def pg_url(postgres_dsn: str) -> str:
    """The test PostgreSQL server, through asyncpg."""
    return postgres_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


async def fresh_engine(url: str, **kwargs: Any) -> AsyncEngine:
    engine = create_async_engine(url, **kwargs)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    return engine


async def count_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(Item))).scalar_one())


def _progress(op: Cancellable) -> list[str]:
    seen: list[str] = []
    op.on_progress(lambda _id, msg, _meta: seen.append(msg))
    return seen


# --------------------------------------------------------------------------- cancellation
async def test_cancelled_transaction_leaves_no_rows_and_a_healthy_pool(db_url: str) -> None:
    engine = await fresh_engine(db_url, pool_size=2, max_overflow=0)
    try:
        with pytest.raises(anyio.get_cancelled_exc_class()):
            async with Cancellable.with_timeout(0.3) as op:
                async with cancellable_session(engine, op) as session:
                    session.add_all([Item(id=i, name=f"orm{i}") for i in range(5)])
                    await session.flush()
                    await session.execute(insert(Item), [{"id": 100, "name": "core"}])
                    assert await session.scalar(select(func.count()).select_from(Item)) == 6
                    await anyio.sleep(30)  # interrupted by the timeout
        assert op.status is OperationStatus.CANCELLED
        assert op.context.cancel_reason is CancellationReason.TIMEOUT
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert await count_rows(engine) == 0  # nothing of the transaction is visible
        async with cancellable_session(engine, Cancellable()) as session:  # pool usable
            session.add(Item(id=1, name="after"))
        assert await count_rows(engine) == 1
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def test_cancel_during_a_statement_leaves_no_rows(db_url: str) -> None:
    engine = await fresh_engine(db_url, pool_size=2, max_overflow=0)
    slow = (
        "SELECT pg_sleep(30)"
        if engine.dialect.name == "postgresql"
        else "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 30000000)"
        " SELECT max(x) FROM c"
    )
    try:
        with pytest.raises(anyio.get_cancelled_exc_class()):
            async with Cancellable.with_timeout(0.3) as op:
                async with cancellable_session(engine, op) as session:
                    await session.execute(insert(Item), [{"id": 1, "name": "a"}])
                    await session.execute(text(slow))
        assert op.context.cancel_reason is CancellationReason.TIMEOUT
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert await count_rows(engine) == 0
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_long_postgres_query_stops_on_the_server(pg_url: str) -> None:
    engine = await fresh_engine(pg_url, pool_size=2, max_overflow=0)
    monitor = create_async_engine(pg_url)
    marker = f"hc_{uuid.uuid4().hex[:12]}"

    async def still_running() -> int:
        async with monitor.connect() as conn:
            query = text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE state = 'active' AND query LIKE :pattern AND pid <> pg_backend_pid()"
            )
            return int((await conn.execute(query, {"pattern": f"%{marker}%"})).scalar_one())

    try:
        started = time.monotonic()
        with pytest.raises(anyio.get_cancelled_exc_class()):
            async with Cancellable.with_timeout(0.5) as op:
                async with cancellable_session(engine, op) as session:
                    await session.execute(text(f"SELECT pg_sleep(30) /* {marker} */"))
        assert time.monotonic() - started < 10
        assert op.context.cancel_reason is CancellationReason.TIMEOUT
        # the statement is gone on the server too (pg_sleep(30) would stay ~30 s otherwise)
        with anyio.fail_after(10):
            while await still_running():
                await anyio.sleep(0.05)
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()
        await monitor.dispose()


async def test_every_operation_is_checked(sqlite_url: str) -> None:
    engine = await fresh_engine(sqlite_url)
    try:
        op = Cancellable()  # not entered: only the token checks can stop the work
        async with AsyncSession(engine) as raw:
            session = CancellableAsyncSession(raw, op)
            assert await session.scalar(text("SELECT 41 + 1")) == 42
            op.token.cancel_sync(CancellationReason.MANUAL, "stop")
            with pytest.raises(anyio.get_cancelled_exc_class()):
                await session.execute(text("SELECT 1"))
            with pytest.raises(anyio.get_cancelled_exc_class()):
                await session.commit()
            assert session._operation_count == 3
    finally:
        await engine.dispose()


async def test_token_cancel_from_another_task_interrupts_the_block(sqlite_url: str) -> None:
    engine = await fresh_engine(sqlite_url)
    try:
        op = Cancellable(name="job")
        inside = anyio.Event()

        async def job() -> None:
            async with op:
                async with cancellable_session(engine, op) as session:
                    session.add(Item(id=1, name="x"))
                    await session.flush()
                    inside.set()
                    await anyio.sleep(30)

        async def guarded_job() -> None:
            try:
                await job()
            except anyio.get_cancelled_exc_class():
                pass

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(guarded_job)
                await inside.wait()
                await op.cancel(CancellationReason.MANUAL, "operator")
        assert op.status is OperationStatus.CANCELLED
        assert op.context.cancel_message == "operator"
        assert await count_rows(engine) == 0
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------- session API
async def test_session_forwards_and_reports(sqlite_url: str) -> None:
    engine = await fresh_engine(sqlite_url)
    try:
        op = Cancellable()
        seen = _progress(op)
        async with AsyncSession(engine, expire_on_commit=False) as raw:
            session = CancellableAsyncSession(raw, op, check_interval=2)
            item = Item(id=1, name="a")
            session.add(item)
            assert item in session and item in session.new
            await session.flush()
            assert session.is_active
            assert (await session.get(Item, 1)) is item
            item.name = "b"
            assert item in session.dirty
            await session.refresh(item)
            assert item.name == "a"
            merged = await session.merge(Item(id=2, name="m"))
            assert merged.name == "m"
            scalars = await session.scalars(select(Item.id).order_by(Item.id))
            assert scalars.all() == [1, 2]
            await session.commit()
            await session.delete(merged)
            assert merged in session.deleted
            await session.rollback()
            session.expunge(item)
            assert item not in session
            session.expunge_all()
        assert "Committing transaction" in seen and "Rolling back transaction" in seen
        assert [m for m in seen if m.startswith("Database operations")] == [
            "Database operations: 2",
            "Database operations: 4",
            "Database operations: 6",
        ]  # flush, get, refresh, merge, scalars, commit, delete: 7 operations
    finally:
        await engine.dispose()


async def test_bulk_mappings_run_in_batches(sqlite_url: str) -> None:
    engine = await fresh_engine(sqlite_url)
    try:
        op = Cancellable()
        seen = _progress(op)
        async with cancellable_session(engine, op) as session:
            await session.bulk_insert_mappings(
                Item, [{"id": i, "name": f"n{i}"} for i in range(2500)]
            )
            await session.bulk_update_mappings(Item, [{"id": 7, "name": "seven"}])
        assert seen[0] == "Starting bulk insert of 2500 records"
        assert [m for m in seen if m.startswith("Inserted batch")] == [
            "Inserted batch 1: 1000 records",
            "Inserted batch 2: 1000 records",
            "Inserted batch 3: 500 records",
        ]
        assert "Starting bulk update of 1 records" in seen
        assert "Updated batch 1: 1 records" in seen
        assert await count_rows(engine) == 2500
        async with engine.connect() as conn:
            name = (await conn.execute(select(Item.name).where(Item.id == 7))).scalar_one()
        assert name == "seven"
    finally:
        await engine.dispose()


async def test_bulk_insert_stops_between_batches(sqlite_url: str) -> None:
    engine = await fresh_engine(sqlite_url)
    try:
        op = Cancellable()

        def stop_after_first(_id: str, message: str, _meta: Any) -> None:
            if message.startswith("Inserted batch 1"):
                op.token.cancel_sync()

        op.on_progress(stop_after_first)
        async with AsyncSession(engine) as raw:
            session = CancellableAsyncSession(raw, op)
            with pytest.raises(anyio.get_cancelled_exc_class()):
                await session.bulk_insert_mappings(
                    Item, [{"id": i, "name": "x"} for i in range(2500)]
                )
            assert (await raw.scalar(select(func.count()).select_from(Item))) == 1000
            await raw.rollback()
        assert await count_rows(engine) == 0
    finally:
        await engine.dispose()


async def test_transaction_commits_or_rolls_back(sqlite_url: str) -> None:
    engine = await fresh_engine(sqlite_url)
    try:
        op = Cancellable()
        seen = _progress(op)
        async with AsyncSession(engine) as raw:
            session = CancellableAsyncSession(raw, op)
            async with CancellableTransaction(session):
                session.add(Item(id=1, name="kept"))
            with pytest.raises(ValueError, match="boom"):
                async with CancellableTransaction(session):
                    session.add(Item(id=2, name="dropped"))
                    await session.flush()
                    raise ValueError("boom")
            async with CancellableTransaction(session):
                session.add(Item(id=3, name="outer"))
                with pytest.raises(KeyError):
                    async with CancellableTransaction(session, nested=True):
                        session.add(Item(id=4, name="inner"))
                        await session.flush()
                        raise KeyError("inner")
        async with engine.connect() as conn:
            ids = (await conn.execute(select(Item.id).order_by(Item.id))).scalars().all()
        assert ids == [1, 3]
        assert seen.count("Committing transaction") == 2
        assert "Rolling back transaction: ValueError" in seen
        assert "Beginning transaction (nested)" in seen
        assert "Rolling back transaction: KeyError" in seen
    finally:
        await engine.dispose()


async def test_transaction_does_not_commit_once_cancelled(sqlite_url: str) -> None:
    engine = await fresh_engine(sqlite_url)
    try:
        op = Cancellable()
        async with AsyncSession(engine) as raw:
            session = CancellableAsyncSession(raw, op)
            with pytest.raises(anyio.get_cancelled_exc_class()):
                async with CancellableTransaction(session):
                    session.add(Item(id=1, name="x"))
                    await session.flush()
                    op.token.cancel_sync()
        assert await count_rows(engine) == 0
    finally:
        await engine.dispose()


async def test_execute_chunked_pages(sqlite_url: str) -> None:
    engine = await fresh_engine(sqlite_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(Item), [{"id": i, "name": f"n{i}"} for i in range(13)])
        op = Cancellable()
        seen = _progress(op)
        chunks: list[Sequence[Any]] = []

        async def collect(rows: Sequence[Any]) -> None:
            chunks.append(rows)

        async with AsyncSession(engine) as raw:
            session = CancellableAsyncSession(raw, op)
            total = await execute_chunked(session, select(Item.id).order_by(Item.id), 5, collect)
            assert total == 13
            assert [len(c) for c in chunks] == [5, 5, 3]
            assert [x for c in chunks for x in c] == list(range(13))
            assert [m for m in seen if m.startswith("Processed")] == [
                "Processed 5 rows",
                "Processed 10 rows",
                "Processed 13 rows",
            ]
            sync_seen: list[int] = []
            assert (
                await execute_chunked(
                    session, select(Item.id).order_by(Item.id), 13, sync_seen.extend
                )
                == 13
            )
            assert sync_seen == list(range(13))
            with pytest.raises(ValueError, match="chunk_size"):
                await execute_chunked(session, select(Item.id), 0)
    finally:
        await engine.dispose()


async def test_result_wrappers(sqlite_url: str) -> None:
    engine = await fresh_engine(sqlite_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(Item), [{"id": i, "name": f"n{i}"} for i in range(2500)])
        op = Cancellable()
        seen = _progress(op)
        async with AsyncSession(engine) as raw:
            session = CancellableAsyncSession(raw, op)
            result = await session.stream(select(Item.id).order_by(Item.id))
            assert isinstance(result, CancellableAsyncResult)
            assert [row.id async for row in result] == list(range(2500))
            assert "Processed 1000 rows" in seen and "Processed 2000 rows" in seen

            scalars = await session.stream_scalars(select(Item.id).order_by(Item.id))
            assert isinstance(scalars, CancellableAsyncScalarResult)
            assert len([x async for x in scalars]) == 2500
            assert "Processed 2000 scalars" in seen

            result = await session.stream(select(Item.id).order_by(Item.id))
            assert (await result.fetchone()).id == 0
            assert (await result.fetchone()).id == 1
            await result.close()
            result = await session.stream(select(Item.id).order_by(Item.id))
            sizes = [len(p) async for p in result.partitions(1000)]
            assert sizes == [1000, 1000, 500]

            result = await session.stream(select(Item.id).where(Item.id < 3).order_by(Item.id))
            assert [r.id for r in await result.fetchall()] == [0, 1, 2]
            result = await session.stream(select(Item.id).order_by(Item.id))
            assert (await result.first()).id == 0
            result = await session.stream(select(Item.id).order_by(Item.id))
            assert await result.scalars().first() == 0

            sync = CancellableScalarResult(
                (await raw.execute(select(Item.id).where(Item.id < 2))).scalars(), op
            )
            assert await sync.all() == [0, 1]
            one = CancellableScalarResult(
                (await raw.execute(select(Item.id).where(Item.id == 5))).scalars(), op
            )
            assert await one.one() == 5
            none = CancellableScalarResult(
                (await raw.execute(select(Item.id).where(Item.id < 0))).scalars(), op
            )
            assert await none.one_or_none() is None

            result = await session.stream(select(Item.id).order_by(Item.id))
            got = 0
            with pytest.raises(anyio.get_cancelled_exc_class()):
                async for _ in result:
                    got += 1
                    if got == 10:
                        op.token.cancel_sync()
            assert got == 10
            await result.close()
            with pytest.raises(anyio.get_cancelled_exc_class()):
                await CancellableScalarResult(None, op).first()
    finally:
        await engine.dispose()


async def test_validation(sqlite_url: str) -> None:
    engine = create_async_engine(sqlite_url)
    try:
        async with AsyncSession(engine) as raw:
            with pytest.raises(TypeError, match="session"):
                CancellableAsyncSession(object())  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="cancellable"):
                CancellableAsyncSession(raw, "op")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="check_interval"):
                CancellableAsyncSession(raw, None, 0)
            with pytest.raises(TypeError, match="check_interval"):
                CancellableAsyncSession(raw, None, 1.5)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="session"):
                CancellableTransaction(raw)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="mappings"):
                await CancellableAsyncSession(raw).bulk_insert_mappings(Item, "x")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="engine"):
            async with cancellable_session("sqlite://", Cancellable()):  # type: ignore[arg-type]
                pass  # pragma: no cover
        with pytest.raises(TypeError, match="cancellable"):
            async with cancellable_session(engine, None):  # type: ignore[arg-type]
                pass  # pragma: no cover
    finally:
        await engine.dispose()


def _e2e_app(_recorder: Any) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"payload"})

    return app


async def test_http_and_database_share_one_operation(
    sqlite_url: str, http_server: Any, server_pool: Any
) -> None:
    server_pool.register("/e2e", _e2e_app)
    engine = await fresh_engine(sqlite_url)
    try:
        async with Cancellable.with_timeout(5.0, name="import") as op:
            async with CancellableHTTPClient(op, base_url=http_server.base_url) as client:
                body = (await client.get("/e2e/data")).text
            async with cancellable_session(engine, op) as session:
                session.add(Item(id=1, name=body))
        assert op.status is OperationStatus.COMPLETED and not op.is_cancelled
        assert await count_rows(engine) == 1
    finally:
        await engine.dispose()
