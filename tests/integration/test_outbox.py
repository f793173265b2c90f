"""The transactional outbox against a real PostgreSQL and a real RabbitMQ.

A row commits or rolls back with the service's own transaction; the relay publishes
committed rows with confirms, with the row's task id as the message id, and only
then marks them sent.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from pydantic import BaseModel
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from leveret import App, InvalidArgument, PayloadInvalid, PayloadTooLarge, Task
from leveret.amqp.topology import Names
from leveret.ops.discovery import free_port
from leveret.outbox import Outbox, OutboxSchemaError, Relay, migrate, migration_sql
from tests.apps.outbox_app import QUEUE, job
from tests.support.amqp import ids_in
from tests.support.models import Job, Sleep
from tests.support.ops import metric, scrape, wait_status
from tests.support.outbox import insert_rows, relaying, rows, start_relay, unsent
from tests.support.processes import cli
from tests.support.waiting import wait_for


def alchemy(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def queued(amqp_url: str, namespace: str) -> Callable[[], object]:
    async def ids() -> list[str]:
        return await ids_in(amqp_url, Names(namespace).work_queue(QUEUE))

    return ids


async def test_rollback_sends_nothing_and_commit_sends_exactly_one(
    make_app: Callable[..., App],
    postgres_url: str,
    outbox_table: str,
    amqp_url: str,
    namespace: str,
) -> None:
    app = make_app()
    app.add(job)
    outbox = Outbox(app, table=outbox_table)

    def service() -> tuple[str, str]:
        with psycopg.connect(postgres_url) as conn:
            with conn.transaction(force_rollback=True):
                rolled_back = outbox.add(conn, job, Job(n=1))
            with conn.transaction():
                committed = outbox.add(conn, job, Job(n=2))
        return rolled_back, committed

    rolled_back, committed = await asyncio.to_thread(service)
    async with relaying(app, postgres_url, outbox_table) as relay:
        await wait_for(lambda: relay.published == 1)
        await wait_for(relay_ready(relay))
    ids = await ids_in(amqp_url, Names(namespace).work_queue(QUEUE))
    assert ids == [committed]
    assert rolled_back not in ids
    [row] = await rows(postgres_url, outbox_table)
    assert row["task_id"] == committed
    assert row["sent_at"] is not None
    assert row["attempts"] == 1


def relay_ready(relay: Relay) -> Callable[[], bool]:
    return lambda: relay.ready


async def test_sqlalchemy_sessions_and_async_connections_add_in_their_transaction(
    make_app: Callable[..., App],
    postgres_url: str,
    outbox_table: str,
    amqp_url: str,
    namespace: str,
) -> None:
    app = make_app()
    app.add(job)
    outbox = Outbox(app, table=outbox_table)

    def with_sqlalchemy() -> list[str]:
        engine = create_engine(alchemy(postgres_url))
        try:
            with Session(engine) as session, session.begin():
                orm = outbox.add(session, job, Job(n=1))
            with Session(engine) as session, session.begin():
                outbox.add(session, job, Job(n=99))
                session.rollback()
            with engine.begin() as conn:
                core = outbox.add(conn, job, Job(n=2), priority=3)
        finally:
            engine.dispose()
        return [orm, core]

    sent = await asyncio.to_thread(with_sqlalchemy)
    engine = create_async_engine(alchemy(postgres_url))
    try:
        async with engine.begin() as conn:
            sent.append(await outbox.add_async(conn, job, Job(n=3)))
    finally:
        await engine.dispose()
    async with await psycopg.AsyncConnection.connect(postgres_url) as db, db.transaction():
        sent.append(await outbox.add_async(db, job, Job(n=4), task_id="chosen-id"))

    assert sent[-1] == "chosen-id"
    async with relaying(app, postgres_url, outbox_table) as relay:
        await wait_for(lambda: relay.published == len(sent))
    assert sorted(await ids_in(amqp_url, Names(namespace).work_queue(QUEUE))) == sorted(sent)
    assert {r["body"] for r in await rows(postgres_url, outbox_table)} == {
        Job(n=n).model_dump_json().encode() for n in (1, 2, 3, 4)
    }


class Note(BaseModel):
    text: str


async def test_bad_input_is_refused_at_add_and_writes_nothing(
    make_app: Callable[..., App], postgres_url: str, outbox_table: str
) -> None:
    app = make_app(max_payload_bytes=64)
    outbox = Outbox(app, table=outbox_table)
    note = Task("outbox.note", Note, queue=QUEUE)
    async with await psycopg.AsyncConnection.connect(postgres_url) as db:
        with pytest.raises(PayloadInvalid, match="takes Job"):
            await outbox.add_async(db, job, Sleep(seconds=1))  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="priority"):
            await outbox.add_async(db, job, Job(n=1), priority=99)
        with pytest.raises(InvalidArgument, match="timezone-aware"):
            await outbox.add_async(db, job, Job(n=1), at=datetime.now())
        with pytest.raises(InvalidArgument, match="longest"):
            await outbox.add_async(db, job, Job(n=1), delay=timedelta(days=5000))
        with pytest.raises(PayloadTooLarge, match="over the limit"):
            await outbox.add_async(db, note, Note(text="x" * 100))
        await outbox.add_async(db, note, Note(text="fits"))
        await db.commit()
    assert [r["task"] for r in await rows(postgres_url, outbox_table)] == ["outbox.note"]


async def test_a_missing_table_or_one_of_the_wrong_shape_names_the_migration(
    make_app: Callable[..., App], postgres_url: str, outbox_table: str
) -> None:
    app = make_app()
    schema = outbox_table.partition(".")[0]
    missing = Outbox(app, table=f"{schema}.nothing_here")
    async with await psycopg.AsyncConnection.connect(postgres_url) as db:
        with pytest.raises(OutboxSchemaError, match="leveret outbox migrate --dsn DSN --table"):
            await missing.add_async(db, job, Job(n=1))
        await db.rollback()
        await db.execute(f"CREATE TABLE {schema}.half (id bigint, task_id integer)")
        await db.commit()
        with pytest.raises(OutboxSchemaError, match="half"):
            await Outbox(app, table=f"{schema}.half").add_async(db, job, Job(n=1))
        await db.rollback()
        relay = Relay(app, postgres_url, table=f"{schema}.half")
        with pytest.raises(OutboxSchemaError) as caught:
            await relay.check_table(db)
    assert "column task_id is integer, not text" in str(caught.value)
    assert "column body is missing" in str(caught.value)
    with pytest.raises(OutboxSchemaError, match="does not exist"):
        await Relay(app, postgres_url, table=f"{schema}.nothing_here").run()


async def test_two_relays_at_once_publish_every_row_once(
    make_app: Callable[..., App],
    postgres_url: str,
    outbox_table: str,
    amqp_url: str,
    namespace: str,
) -> None:
    producer = make_app()
    outbox = Outbox(producer, table=outbox_table)
    count = 3000
    await insert_rows(postgres_url, outbox_table, [outbox.row(job, Job(n=n)) for n in range(count)])
    first, second = make_app(), make_app()
    for app in (first, second):
        app.add(job)
    async with (
        relaying(first, postgres_url, outbox_table, batch_size=50) as one,
        relaying(second, postgres_url, outbox_table, batch_size=50) as two,
    ):
        await wait_for(lambda: one.published + two.published >= count)
    ids = await ids_in(amqp_url, Names(namespace).work_queue(QUEUE))
    assert one.published + two.published == count
    assert one.published > 0, "both relays took batches"
    assert two.published > 0, "both relays took batches"
    assert len(ids) == count
    assert Counter(ids).most_common(1)[0][1] == 1, "no row published twice"
    assert await unsent(postgres_url, outbox_table) == 0


async def test_one_relay_publishes_a_queue_in_insertion_order(
    make_app: Callable[..., App],
    postgres_url: str,
    outbox_table: str,
    amqp_url: str,
    namespace: str,
) -> None:
    app = make_app()
    app.add(job)
    outbox = Outbox(app, table=outbox_table)
    made = [outbox.row(job, Job(n=n)) for n in range(500)]
    await insert_rows(postgres_url, outbox_table, made)
    async with relaying(app, postgres_url, outbox_table, batch_size=64) as relay:
        await wait_for(lambda: relay.published == len(made))
    ids = await ids_in(amqp_url, Names(namespace).work_queue(QUEUE))
    assert ids == [r["task_id"] for r in made]


async def test_a_row_that_cannot_be_routed_waits_and_the_others_go(
    make_app: Callable[..., App],
    postgres_url: str,
    outbox_table: str,
    amqp_url: str,
    namespace: str,
) -> None:
    app = make_app()
    app.add(job)
    stray = Task("outbox.stray", Job, queue="nobody-declares-this")
    outbox = Outbox(app, table=outbox_table)
    async with await psycopg.AsyncConnection.connect(postgres_url) as db, db.transaction():
        lost = await outbox.add_async(db, stray, Job(n=0))
        good = await outbox.add_async(db, job, Job(n=1))
    async with relaying(app, postgres_url, outbox_table) as relay:
        await wait_for(lambda: relay.published == 1)

        async def failed_once() -> bool:
            return any(
                r["attempts"]
                for r in await rows(postgres_url, outbox_table)
                if r["task_id"] == lost
            )

        await wait_for(failed_once)
    assert await ids_in(amqp_url, Names(namespace).work_queue(QUEUE)) == [good]
    by_id = {r["task_id"]: r for r in await rows(postgres_url, outbox_table)}
    assert by_id[lost]["sent_at"] is None
    assert "Unroutable" in by_id[lost]["last_error"]
    assert by_id[lost]["retry_at"] is not None
    assert by_id[good]["sent_at"] is not None


async def test_delayed_rows_are_published_to_the_delay_levels(
    make_app: Callable[..., App],
    postgres_url: str,
    outbox_table: str,
    amqp_url: str,
    namespace: str,
) -> None:
    app = make_app()
    app.add(job)
    outbox = Outbox(app, table=outbox_table)
    async with await psycopg.AsyncConnection.connect(postgres_url) as db, db.transaction():
        later = await outbox.add_async(db, job, Job(n=1), delay=0.2)
    [row] = await rows(postgres_url, outbox_table)
    assert row["deliver_at"] is not None
    async with relaying(app, postgres_url, outbox_table) as relay:
        await wait_for(lambda: relay.published == 1)
    await wait_for(lambda: _has(amqp_url, namespace, later))


async def _has(amqp_url: str, namespace: str, task_id: str) -> bool:
    return task_id in await ids_in(amqp_url, Names(namespace).work_queue(QUEUE))


async def test_sent_rows_are_removed_after_the_retention_period(
    make_app: Callable[..., App], postgres_url: str, outbox_table: str
) -> None:
    app = make_app()
    app.add(job)
    outbox = Outbox(app, table=outbox_table)
    await insert_rows(postgres_url, outbox_table, [outbox.row(job, Job(n=n)) for n in range(10)])
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as db:
        relay = Relay(app, postgres_url, table=outbox_table)
        count, oldest = await relay.measure_backlog(db)
        assert count == 10
        assert oldest >= 0
    kept = relaying(app, postgres_url, outbox_table, cleanup_interval=0.05)
    async with kept as relay:
        await wait_for(lambda: relay.published == 10)
        await wait_for(lambda: relay.backlog == 0)
    assert len(await rows(postgres_url, outbox_table)) == 10, "kept for the retention period"

    async def gone() -> bool:
        return not await rows(postgres_url, outbox_table)

    cleaning = relaying(app, postgres_url, outbox_table, retention=timedelta(0))
    async with cleaning:
        await wait_for(gone)


async def test_the_cli_migrates_relays_reports_health_and_stops_on_sigterm(
    make_app: Callable[..., App],
    postgres_url: str,
    outbox_table: str,
    amqp_url: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    schema = outbox_table.partition(".")[0]
    table = f"{schema}.from_cli"
    for _ in range(2):  # safe to run again
        done = cli(
            amqp_url, namespace, "outbox", "migrate", "--dsn", postgres_url, "--table", table
        )
        assert done.returncode == 0, done.stderr
        assert f"outbox table {table} is ready" in done.stdout
    printed = cli(amqp_url, namespace, "outbox", "migrate", "--print", "--table", table)
    assert printed.stdout == migration_sql(table)
    refused = cli(
        amqp_url, namespace, "outbox", "migrate", "--dsn", postgres_url, "--table", "a.b.c"
    )
    assert refused.returncode == 2
    assert "SCHEMA.TABLE" in refused.stderr

    app = make_app()
    app.add(job)
    outbox = Outbox(app, table=table)
    await insert_rows(postgres_url, table, [outbox.row(job, Job(n=n)) for n in range(20)])
    port = free_port()
    log = tmp_path / "relay.log"
    relay = start_relay(
        amqp_url, namespace, postgres_url, table, "--health-port", str(port), log=log
    )
    try:
        await wait_status(port, "/readyz", 200)

        async def all_sent() -> bool:
            return await unsent(postgres_url, table) == 0

        await wait_for(all_sent)

        async def scraped() -> bool:
            text = await scrape(port)
            return (
                metric(text, "leveret_outbox_published_total") == 20
                and metric(text, "leveret_outbox_backlog") == 0
            )

        await wait_for(scraped)
        assert metric(await scrape(port), "leveret_outbox_relay_ready") == 1
        relay.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(relay.wait, 30) == 0
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait()
    assert len(await ids_in(amqp_url, Names(namespace).work_queue(QUEUE))) == 20
    assert "guest:guest" not in log.read_text()


async def test_the_relay_refuses_to_start_on_a_table_of_the_wrong_shape(
    postgres_url: str, outbox_table: str, amqp_url: str, namespace: str
) -> None:
    schema = outbox_table.partition(".")[0]
    done = cli(
        amqp_url,
        namespace,
        "outbox",
        "relay",
        "--dsn",
        postgres_url,
        "--table",
        f"{schema}.absent",
        "--health-port",
        "0",
        "tests.apps.outbox_app:app",
    )
    assert done.returncode == 2
    assert f"the outbox table {schema}.absent does not exist" in done.stderr
    assert "leveret outbox migrate" in done.stderr


def test_replicas_migrating_at_once_all_succeed(postgres_url: str, outbox_table: str) -> None:
    """Pods that each migrate on start race on CREATE TABLE IF NOT EXISTS; none fails."""
    table = f"{outbox_table.partition('.')[0]}.raced"
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def replica() -> None:
        start.wait()
        try:
            migrate(postgres_url, table)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (table,)
