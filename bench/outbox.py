"""The outbox relay's throughput, from commit to confirm, beside ``send_many`` in the same run.

Needs PostgreSQL: ``LEVERET_BENCH_POSTGRES_URL``, else the local test database
(postgresql://postgres@127.0.0.1:5432/test). Each run uses a schema of its own and
drops it.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import psycopg

from bench import apps
from bench.harness import Harness
from bench.scenarios import Row, Sizes, _timed
from leveret.outbox import Outbox, Relay, migration_sql

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
COLUMNS = ("task_id", "task", "queue", "body", "priority", "headers", "deliver_at")


async def relay_throughput(h: Harness, s: Sizes) -> list[Row]:
    dsn = os.environ.get("LEVERET_BENCH_POSTGRES_URL", DEFAULT_DSN)
    n = s.bulk // 2
    scenario, metric = "outbox relay", f"{n} committed rows: commit to all confirmed and marked"
    try:
        admin = await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        note = f"no PostgreSQL at {dsn} ({exc}); set LEVERET_BENCH_POSTGRES_URL"
        return [Row(scenario, metric, "rows/s", None, None, note=note)]
    schema = f"bench{uuid.uuid4().hex[:8]}"
    table = f"{schema}.leveret_outbox"
    outbox = Outbox(h.app, table=table)
    jobs = [apps.Job(n=i) for i in range(n)]
    relay_rate = bulk_rate = 0.0
    rounds = max(1, s.repeat)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        await admin.execute(migration_sql(table))
        sql = (
            f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES "
            "(%s, %s, %s, %s, %s, CAST(%s AS jsonb), %s)"
        )
        relay = Relay(h.app, dsn, table=table, poll_interval=0.01, backlog_interval=3600)
        running = asyncio.create_task(relay.run())
        try:
            for _ in range(rounds):
                made = [outbox.row(apps.noop, job) for job in jobs]
                async with admin.cursor() as cursor, admin.transaction():
                    await cursor.executemany(sql, [tuple(r[c] for c in COLUMNS) for r in made])
                committed, before = time.perf_counter(), relay.published
                while relay.published < before + n:  # noqa: ASYNC110 - a counter, no event
                    await asyncio.sleep(0.002)
                relay_rate = max(relay_rate, n / (time.perf_counter() - committed))
                await h.purge("work")
                bulk_rate = max(bulk_rate, n / await _timed(h.app.send_many(apps.noop, jobs)))
                await h.purge("work")
        finally:
            relay.request_stop()
            await running
    finally:
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()
    return [
        Row(
            scenario,
            metric,
            "rows/s",
            relay_rate,
            bulk_rate,
            note=f"baseline: send_many of the same {n} tasks; best of {rounds}",
        )
    ]
