"""The outbox beside the tests: a relay running in this event loop, and the table's state."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg

from leveret import App
from leveret.outbox import Relay


@contextlib.asynccontextmanager
async def relaying(app: App, dsn: str, table: str, **options: Any) -> AsyncIterator[Relay]:
    """A relay running in this loop; stopped (its batch finished) on the way out."""
    options.setdefault("poll_interval", 0.05)
    relay = Relay(app, dsn, table=table, **options)
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        relay.request_stop()
        await task


async def rows(dsn: str, table: str) -> list[dict[str, Any]]:
    """Every row of the outbox table, oldest first, as dictionaries."""
    async with await psycopg.AsyncConnection.connect(dsn) as db:
        cursor = await db.execute(f"SELECT * FROM {table} ORDER BY id")
        names = [c.name for c in cursor.description or ()]
        return [dict(zip(names, record, strict=True)) for record in await cursor.fetchall()]


async def unsent(dsn: str, table: str) -> int:
    """Rows not yet marked sent."""
    async with await psycopg.AsyncConnection.connect(dsn) as db:
        sql = f"SELECT count(*) FROM {table} WHERE sent_at IS NULL"
        record = await (await db.execute(sql)).fetchone()
        assert record is not None
        return int(record[0])


async def insert_rows(dsn: str, table: str, rows: list[dict[str, Any]]) -> None:
    """Insert many rows (as ``Outbox.row`` makes them) in one transaction."""
    columns = ("task_id", "task", "queue", "body", "priority", "headers", "deliver_at")
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        "(%s, %s, %s, %s, %s, CAST(%s AS jsonb), %s)"
    )
    async with await psycopg.AsyncConnection.connect(dsn) as db, db.cursor() as cursor:
        await cursor.executemany(sql, [tuple(r[c] for c in columns) for r in rows])
