"""Cancellable database work: SQLite through SQLAlchemy async + aiosqlite.

1. basic queries in a ``cancellable_session`` (committed at the end of the block);
2. batch inserts with progress, in a ``@cancellable(timeout=...)`` function;
3. a long read in pages (``execute_chunked``) reporting its progress;
4. a cancelled operation: its timeout fires after some writes, the session rolls back and
   nothing of the block stays written;
5. a job stopped by a token cancelled from another task, in the middle of its writes.

The database is a throwaway file in a temporary directory rather than ``:memory:``: a
cancellation that interrupts a statement makes SQLAlchemy discard (invalidate) that
connection, and an in-memory SQLite database lives and dies with its connection.

Run it::

    python examples/database_simple.py             # asyncio, uvloop, anyio
    python examples/database_simple.py uvloop      # one mode

Needs ``sqlalchemy[asyncio]`` and ``aiosqlite`` (``pip install hother-cancelable[sqlalchemy]``).
SQLAlchemy's async engine runs on asyncio only: not in the trio mode.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import outcome, parse_modes, run, say, section
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from hother.cancelable import (
    Cancellable,
    CancellationReason,
    CancellationToken,
    cancellable,
    get_backend,
)
from hother.cancelable.integrations.sqlalchemy import cancellable_session, execute_chunked

metadata = MetaData()
items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(50), nullable=False),
    Column("value", Integer, nullable=False),
)


async def count_rows(engine: AsyncEngine, name_like: str = "%") -> int:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(func.count()).select_from(items).where(items.c.name.like(name_like))
        )
        return int(result.scalar_one())


async def basic_demo(engine: AsyncEngine) -> None:
    section("1. basic queries")
    async with Cancellable.with_timeout(5, name="basic_queries") as op:
        async with cancellable_session(engine, op) as session:
            await session.execute(
                insert(items),
                [{"name": f"basic_{i}", "value": i * 10} for i in range(3)],
            )
            result = await session.execute(select(items.c.name).order_by(items.c.id))
            names = [row[0] for row in result]
    say(f"inserted and read back: {names}; {outcome(op)}")


@cancellable(timeout=5, name="import_batches")
async def import_rows(
    engine: AsyncEngine,
    count: int,
    batch: int,
    reports: list[str],
    cancellable: Cancellable | None = None,
) -> int:
    """Insert ``count`` rows in batches under a 5 s timeout, reporting each batch.

    ``cancellable`` is the call's own operation, injected by the decorator.
    """
    assert cancellable is not None
    cancellable.on_progress(lambda _id, message, _meta: reports.append(str(message)))
    async with cancellable_session(engine, cancellable) as session:
        for start in range(0, count, batch):
            rows = [{"name": f"row_{i}", "value": i % 97} for i in range(start, start + batch)]
            await session.execute(insert(items), rows)
            await cancellable.report_progress(f"Inserted batch {start // batch + 1}: {batch} rows")
    return count


async def batch_demo(engine: AsyncEngine) -> None:
    section("2. batch processing with progress")
    reports: list[str] = []
    inserted = await import_rows(engine, 5000, 500, reports)
    batches = [r for r in reports if r.startswith("Inserted")]
    say(f"imported {inserted} rows in {len(batches)} batches, last: {batches[-1]!r}")
    say(f"session reports: {[r for r in reports if not r.startswith('Inserted')]}")
    say(f"rows now: {await count_rows(engine, 'row_%')}")


async def chunked_demo(engine: AsyncEngine) -> None:
    section("3. a long read in pages")
    reports: list[str] = []
    total = 0

    def add(values: Any) -> None:
        nonlocal total
        total += sum(values)

    op = Cancellable.with_timeout(5, name="report")
    op.on_progress(lambda _id, message, _meta: reports.append(str(message)))
    async with op:
        async with cancellable_session(engine, op) as session:
            query = select(items.c.value).where(items.c.name.like("row_%")).order_by(items.c.id)
            rows = await execute_chunked(session, query, chunk_size=1000, process_chunk=add)
    pages = [r for r in reports if r.startswith("Processed")]
    say(f"read {rows} rows in {len(pages)} pages, sum of values {total}; {outcome(op)}")
    say(f"progress: {pages}")


async def cancelled_demo(engine: AsyncEngine) -> None:
    section("4. a cancelled operation rolls back")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    before = await count_rows(engine)
    op = Cancellable.with_timeout(0.1, name="slow_migration")
    written = 0
    try:
        async with op:
            async with cancellable_session(engine, op) as session:
                for i in range(100):
                    await session.execute(insert(items), [{"name": f"temp_{i}", "value": i}])
                    written += 1
                    await backend.sleep(0.005)  # slow processing between writes
    except cancelled:
        pass
    after = await count_rows(engine)
    say(f"slow_migration: {outcome(op)} after {written} of 100 writes")
    say(f"rows before {before}, after {after}: rolled back = {before == after}")


async def token_demo(engine: AsyncEngine) -> None:
    section("5. a job stopped by a token from another task")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    stop = CancellationToken()
    tenth_write = backend.create_event()
    written = 0

    async def operator() -> None:
        await tenth_write.wait()
        await stop.cancel(CancellationReason.MANUAL, "operator pressed stop")

    op = Cancellable.with_token(stop, name="cleanup_job")
    async with backend.create_task_group() as tg:
        tg.start_soon(operator)
        try:
            async with op:
                async with cancellable_session(engine, op) as session:
                    for i in range(1000):
                        # a statement in flight is interrupted; the next one checks first
                        await session.execute(insert(items), [{"name": f"job_{i}", "value": i}])
                        written += 1
                        if written == 10:
                            tenth_write.set()
        except cancelled:
            pass
    say(f"cleanup_job: {outcome(op)}")
    say(f"stopped after {written} of 1000 writes; rows kept: {await count_rows(engine, 'job_%')}")


async def demo() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_async_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'demo.sqlite'}")
        try:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
            await basic_demo(engine)
            await batch_demo(engine)
            await chunked_demo(engine)
            await cancelled_demo(engine)
            await token_demo(engine)
        finally:
            await engine.dispose()


def main() -> int:
    modes = parse_modes(
        sys.argv[1:],
        supported=("asyncio", "uvloop", "anyio"),
        unsupported={"trio": "SQLAlchemy's async engine and aiosqlite run on asyncio only"},
    )
    for mode in modes:
        run(mode, demo)
    print("database_simple finished on:", ", ".join(modes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
