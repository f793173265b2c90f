"""The outbox beside the tests: a relay running in this event loop, and the table's state."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg

from leveret import App
from leveret.outbox import Relay
from tests.support import ROOT
from tests.support.processes import leveret_command, leveret_env


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


def start_relay(
    url: str, namespace: str, dsn: str, table: str, *args: str, log: Path
) -> subprocess.Popen[bytes]:
    """``leveret outbox relay`` for ``tests.apps.outbox_app`` as a process, its output
    in the file ``log`` (it may be started and killed many times)."""
    command = leveret_command(
        "outbox", "relay", "--dsn", dsn, "--table", table, *args, "tests.apps.outbox_app:app"
    )
    env = leveret_env(url, namespace, {"LEVERET_LOG_FORMAT": "text"})
    with log.open("ab") as sink:
        return subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
