"""Adding tasks to the outbox inside the service's own transaction.

The row is written on the caller's connection or session, so it commits or rolls
back with the service's own rows: no task for an order that was rolled back, no
order without its task. The payload is validated, encoded and size-checked by the
App's ``TaskSender``, exactly as ``send`` would, before anything is written.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg

from leveret.app import App
from leveret.outbox.schema import DEFAULT_TABLE, Table, shape_error
from leveret.sending import _delay_seconds
from leveret.task import M, Task

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection as SAConnection
    from sqlalchemy.ext.asyncio import AsyncConnection as SAAsyncConnection
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    SyncConnection = psycopg.Connection[Any] | Session | SAConnection
    AsyncConnection = psycopg.AsyncConnection[Any] | AsyncSession | SAAsyncConnection

_COLUMNS = ("task_id", "task", "queue", "body", "priority", "headers", "deliver_at")


class Outbox:
    """Writes tasks into an outbox table; ``leveret outbox relay`` sends them.

    ``add`` takes a psycopg 3 ``Connection`` or a SQLAlchemy ``Session`` or
    ``Connection``; ``add_async`` their async counterparts. Either returns the task
    id, which is also the id of the message the relay publishes.
    """

    def __init__(self, app: App, *, table: str = DEFAULT_TABLE) -> None:
        self.app = app
        self.table = Table.parse(table)
        into = f"INSERT INTO {self.table.sql} ({', '.join(_COLUMNS)})"
        psycopg_values = (f"%({c})s" for c in _COLUMNS)
        named_values = (f":{c}" for c in _COLUMNS)
        self._psycopg_sql = f"{into} VALUES ({', '.join(_jsonb(psycopg_values))})"
        self._sqlalchemy_sql = f"{into} VALUES ({', '.join(_jsonb(named_values))})"

    def row(
        self,
        task: Task[M],
        payload: M,
        *,
        priority: int | None = None,
        delay: timedelta | float | None = None,
        at: datetime | None = None,
        task_id: str | None = None,
    ) -> dict[str, Any]:
        """The row for a task, refused now if ``send`` would refuse it."""
        sender = self.app.sender
        body = sender.encode(task, payload)
        prio = task.priority if priority is None else priority
        sender.check_priority(prio)
        seconds = _delay_seconds(delay, at)
        deliver_at: datetime | None = None
        if seconds:
            sender.delay_units(seconds)
            deliver_at = at if at is not None else datetime.now(tz=UTC) + timedelta(seconds=seconds)
        headers = sender.headers()
        emitter = self.app.emitter
        if emitter:
            # The relay publishes later, elsewhere: keep the trace this add belongs to.
            emitter.before_store(task.name, task.queue, headers)
        return {
            "task_id": task_id or uuid.uuid4().hex,
            "task": task.name,
            "queue": task.queue,
            "body": body,
            "priority": prio,
            "headers": json.dumps(headers),
            "deliver_at": deliver_at,
        }

    def add(
        self,
        conn: SyncConnection,
        task: Task[M],
        payload: M,
        *,
        priority: int | None = None,
        delay: timedelta | float | None = None,
        at: datetime | None = None,
        task_id: str | None = None,
    ) -> str:
        """Write the task into the outbox in ``conn``'s transaction; return its id.

        Nothing is sent until the transaction commits and a relay picks the row up.
        """
        row = self.row(task, payload, priority=priority, delay=delay, at=at, task_id=task_id)
        try:
            if isinstance(conn, psycopg.Connection):
                conn.execute(self._psycopg_sql, row)
            else:
                from sqlalchemy import text

                conn.execute(text(self._sqlalchemy_sql), row)
        except Exception as exc:
            error = shape_error(self.table, exc)
            if error is None:
                raise
            raise error from exc
        return str(row["task_id"])

    async def add_async(
        self,
        conn: AsyncConnection,
        task: Task[M],
        payload: M,
        *,
        priority: int | None = None,
        delay: timedelta | float | None = None,
        at: datetime | None = None,
        task_id: str | None = None,
    ) -> str:
        """``add`` for a psycopg ``AsyncConnection`` or a SQLAlchemy ``AsyncSession``
        or ``AsyncConnection``."""
        row = self.row(task, payload, priority=priority, delay=delay, at=at, task_id=task_id)
        try:
            if isinstance(conn, psycopg.AsyncConnection):
                await conn.execute(self._psycopg_sql, row)
            else:
                from sqlalchemy import text

                await conn.execute(text(self._sqlalchemy_sql), row)
        except Exception as exc:
            error = shape_error(self.table, exc)
            if error is None:
                raise
            raise error from exc
        return str(row["task_id"])


def _jsonb(values: Iterator[str]) -> list[str]:
    """The headers parameter cast to jsonb (``CAST``: ``::`` clashes with ``:name``)."""
    return [f"CAST({v} AS jsonb)" if "headers" in v else v for v in values]
