"""The relay: publishes committed outbox rows with confirms, and only then marks them sent.

Each batch is claimed with ``FOR UPDATE SKIP LOCKED`` inside one transaction that
stays open while the rows are published: another relay skips them, and the marks
commit only for rows RabbitMQ confirmed. A relay that dies mid-batch commits
nothing, its locks go with its connection, and the rows are published again by
whoever claims them next: at-least-once, with the row's task id as the message id,
so a duplicate is recognisable.

Order: one relay claims rows by ``id`` (insertion order) and publishes a batch in
that order on one channel, so a queue receives them in that order. Rows whose
transactions commit in another order than they inserted go out as they become
visible; a row whose publish failed is retried later, behind newer rows. Several
relays each take disjoint batches at once: no order holds between their batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg

from leveret import message
from leveret.amqp.connection import CONNECTION_ERRORS
from leveret.app import App
from leveret.errors import (
    AccessRefused,
    BrokerUnavailable,
    InvalidArgument,
    PayloadTooLarge,
    PublishError,
    Unroutable,
)
from leveret.outbox.metrics import RelayMetrics
from leveret.outbox.schema import DEFAULT_TABLE, SHAPE_QUERY, Table, check_shape

log = logging.getLogger(__name__)

#: Errors that belong to one row (its queue is missing, its body too large for the
#: current limit, ...): the row is retried after a growing pause, the others go on.
ROW_ERRORS: tuple[type[BaseException], ...] = (
    Unroutable,
    PayloadTooLarge,
    InvalidArgument,
    AccessRefused,
)
#: Errors that mean RabbitMQ is out of reach: the relay backs off, not ready.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    BrokerUnavailable,
    PublishError,
    *CONNECTION_ERRORS,
)
#: The longest pause before a row whose publish failed is tried again.
MAX_ROW_PAUSE = 300.0
#: The longest pause of the relay itself while PostgreSQL or RabbitMQ is unreachable.
MAX_PAUSE = 30.0
CLEANUP_CHUNK = 5000


@dataclass(slots=True)
class Row:
    id: int
    task_id: str
    task: str
    queue: str
    body: bytes
    priority: int
    headers: dict[str, Any]
    deliver_at: Any
    attempts: int


class BrokerDown(BrokerUnavailable):
    """Some publishes of a batch failed for want of a broker: back off, then retry."""


class Relay:
    """Drains one outbox table into RabbitMQ until ``request_stop``."""

    def __init__(
        self,
        app: App,
        dsn: str,
        *,
        table: str = DEFAULT_TABLE,
        batch_size: int = 500,
        poll_interval: float = 0.5,
        retention: timedelta = timedelta(days=1),
        cleanup_interval: float = 60.0,
        backlog_interval: float = 5.0,
        metrics: RelayMetrics | None = None,
    ) -> None:
        if batch_size < 1:
            raise InvalidArgument(f"batch_size must be at least 1, got {batch_size}")
        if poll_interval <= 0:
            raise InvalidArgument(f"poll_interval must be > 0 seconds, got {poll_interval}")
        if retention < timedelta(0):
            raise InvalidArgument(f"retention must be >= 0, got {retention}")
        self.app = app
        self.dsn = dsn
        self.table = Table.parse(table)
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retention = retention
        self.cleanup_interval = cleanup_interval
        self.backlog_interval = backlog_interval
        self.metrics = metrics
        self.published = 0
        self.backlog: int | None = None
        self.oldest_pending: float | None = None
        self._healthy = False
        self._reason = "starting"
        self._db: psycopg.AsyncConnection[Any] | None = None
        self._declared = False
        self._stop = asyncio.Event()
        self._next_cleanup = 0.0
        self._next_backlog = 0.0
        t = self.table.sql
        self._claim = (
            "SELECT id, task_id, task, queue, body, priority, headers, deliver_at, attempts "
            f"FROM {t} WHERE sent_at IS NULL AND (retry_at IS NULL OR retry_at <= now()) "
            "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"
        )
        self._mark_sent = (
            f"UPDATE {t} SET sent_at = now(), attempts = attempts + 1, last_error = NULL "
            "WHERE id = ANY(%s)"
        )
        self._mark_failed = (
            f"UPDATE {t} SET attempts = attempts + 1, last_error = %s, "
            "retry_at = now() + make_interval(secs => %s) WHERE id = %s"
        )
        self._backlog_sql = (
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) "
            f"FROM {t} WHERE sent_at IS NULL"
        )
        self._cleanup = (
            f"DELETE FROM {t} WHERE id IN (SELECT id FROM {t} "
            f"WHERE sent_at < now() - %s LIMIT {CLEANUP_CHUNK})"
        )

    # -- state ----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Relaying: the last round reached both, and the broker connection is up."""
        return self._healthy and self.app.connector.connection is not None

    @property
    def reason(self) -> str:
        """Why the relay is not ready, for ``/readyz``."""
        if self._healthy and self.app.connector.connection is None:
            return "not connected to RabbitMQ (reconnecting)"
        return self._reason

    def request_stop(self) -> None:
        """Finish the batch in hand (publish, mark, commit), then return from ``run``."""
        self._stop.set()

    # -- the loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Relay until stopped. PostgreSQL or RabbitMQ unreachable: back off and retry
        (not ready meanwhile). A table of the wrong shape raises ``OutboxSchemaError``."""
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    relayed = await self.step()
                except BROKER_ERRORS as exc:
                    failures += 1
                    self._unhealthy(f"RabbitMQ unreachable: {type(exc).__name__}: {exc}")
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    failures += 1
                    self._unhealthy(f"PostgreSQL unreachable: {exc}".strip())
                    await self._close_db()
                else:
                    failures = 0
                    if relayed < self.batch_size:
                        await self._pause(self.poll_interval)
                    continue
                pause = min(0.2 * 2 ** (failures - 1), MAX_PAUSE) * random.uniform(0.75, 1.25)
                log.warning("outbox relay: %s; retrying in %.1f s", self._reason, pause)
                await self._pause(pause)
        finally:
            await self._close_db()

    async def step(self) -> int:
        """One round: connect if need be, relay one batch, keep house. Rows relayed."""
        db = await self._connect_db()
        if self.app.connector.connection is None:
            self._reason = "not connected to RabbitMQ (connecting)"
            await self.app.connector.get()
        if not self._declared:
            # The app's queues exist before its rows are published: a row is never
            # unroutable for want of a worker started first.
            await self.app.declare()
            self._declared = True
        relayed = await self.relay_batch(db)
        self._healthy = True
        self._reason = "ready"
        if self.metrics is not None:
            self.metrics.ready.set(1)
        now = time.monotonic()
        if now >= self._next_backlog:
            self._next_backlog = now + self.backlog_interval
            await self.measure_backlog(db)
        if now >= self._next_cleanup:
            self._next_cleanup = now + self.cleanup_interval
            await self.clean_up(db)
        return relayed

    async def relay_batch(self, db: psycopg.AsyncConnection[Any]) -> int:
        """Claim up to ``batch_size`` due rows, publish them, mark those confirmed."""
        async with db.transaction():
            cursor = await db.execute(self._claim, (self.batch_size,))
            rows = [Row(*record) for record in await cursor.fetchall()]
            if not rows:
                return 0
            results = await asyncio.gather(
                *(self._publish(row) for row in rows), return_exceptions=True
            )
            sent = [row.id for row, result in zip(rows, results, strict=True) if result is None]
            down: BaseException | None = None
            for row, result in zip(rows, results, strict=True):
                if result is None:
                    continue
                if isinstance(result, ROW_ERRORS):
                    await self._row_failed(db, row, result)
                elif isinstance(result, Exception):
                    down = down or result
                    self._count_failure(result)
                else:
                    raise result  # cancelled: nothing of this batch commits
            if sent:
                await db.execute(self._mark_sent, (sent,))
        self.published += len(sent)
        if self.metrics is not None and sent:
            self.metrics.published.inc(len(sent))
        if down is not None:
            raise BrokerDown(f"{len(rows) - len(sent)} of {len(rows)} not confirmed: {down}")
        return len(rows)

    async def _publish(self, row: Row) -> None:
        headers = dict(row.headers)
        headers[message.PUBLISHED_AT] = message.now_ms()
        await self.app.sender.send_body(
            name=row.task,
            queue=row.queue,
            body=bytes(row.body),
            priority=row.priority,
            task_id=row.task_id,
            at=row.deliver_at,
            headers=headers,
        )

    async def _row_failed(
        self, db: psycopg.AsyncConnection[Any], row: Row, error: BaseException
    ) -> None:
        pause = min(2.0**row.attempts, MAX_ROW_PAUSE)
        text = message.describe(error)
        log.warning(
            "outbox row %s (task %s, id %s) not published: %s; trying again in %.0f s",
            row.id,
            row.task,
            row.task_id,
            text,
            pause,
        )
        await db.execute(self._mark_failed, (text, pause, row.id))
        self._count_failure(error)

    def _count_failure(self, error: BaseException) -> None:
        if self.metrics is not None:
            self.metrics.failures.labels(type(error).__name__).inc()

    async def measure_backlog(self, db: psycopg.AsyncConnection[Any]) -> tuple[int, float]:
        """Rows pending and the age of the oldest, in seconds."""
        cursor = await db.execute(self._backlog_sql)
        record = await cursor.fetchone()
        assert record is not None
        count, oldest = int(record[0]), float(record[1])
        self.backlog, self.oldest_pending = count, oldest
        if self.metrics is not None:
            self.metrics.backlog.set(count)
            self.metrics.oldest.set(oldest)
        return count, oldest

    async def clean_up(self, db: psycopg.AsyncConnection[Any]) -> int:
        """Delete rows sent longer ago than the retention period, in chunks."""
        removed = 0
        while True:
            cursor = await db.execute(self._cleanup, (self.retention,))
            removed += cursor.rowcount
            if cursor.rowcount < CLEANUP_CHUNK:
                break
        if removed:
            log.info("outbox relay: removed %d rows sent over %s ago", removed, self.retention)
            if self.metrics is not None:
                self.metrics.cleaned.inc(removed)
        return removed

    # -- connections ----------------------------------------------------------------

    async def _connect_db(self) -> psycopg.AsyncConnection[Any]:
        if self._db is not None and not self._db.closed:
            return self._db
        self._reason = "not connected to PostgreSQL (connecting)"
        db = await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, application_name="leveret-outbox-relay", connect_timeout=10
        )
        try:
            await self.check_table(db)
        except BaseException:
            await db.close()
            raise
        self._db = db
        return db

    async def check_table(self, db: psycopg.AsyncConnection[Any]) -> None:
        """Raise ``OutboxSchemaError`` (naming the migration) unless the table fits."""
        cursor = await db.execute(SHAPE_QUERY, (self.table.sql,))
        check_shape(self.table, [(str(a), str(b), bool(c)) for a, b, c in await cursor.fetchall()])

    async def _close_db(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(Exception):
                await db.close()

    def _unhealthy(self, reason: str) -> None:
        self._healthy = False
        self._reason = reason
        if self.metrics is not None:
            self.metrics.ready.set(0)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
