"""Sentry with a real client: an error event only when a task is dead-lettered, and a
trace that runs from the request that sent a task into every attempt of it, also
through an outbox row."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import sentry_sdk

from leveret import App, RetryPolicy, Worker
from leveret.ops.sentry import SentryMiddleware
from leveret.outbox import Outbox
from tests.apps.ops_app import fail
from tests.apps.ops_sentry import Envelopes
from tests.apps.outbox_app import job
from tests.support.models import Job, Sleep
from tests.support.ops import events, start_ops_worker
from tests.support.outbox import rows
from tests.support.waiting import wait_for
from tests.support.workers import Spawn, running

FAST = RetryPolicy(max_attempts=2, base=0.01, jitter="none")


@pytest.fixture
def ingest() -> Iterator[Envelopes]:
    with Envelopes() as envelopes:
        yield envelopes
        sentry_sdk.get_client().close()
        sentry_sdk.init()  # no DSN: an inactive client again for the next tests


def data(item: dict[str, object]) -> dict[str, object]:
    return item["contexts"]["trace"].get("data", {})  # type: ignore[index,union-attr,no-any-return]


async def test_dead_letter_reported_with_tags_and_trace_joins_the_sender(
    make_app: Callable[..., App], ingest: Envelopes
) -> None:
    sentry_sdk.init(dsn=ingest.dsn, traces_sample_rate=1.0)
    app = make_app(middleware=[SentryMiddleware()])
    seen: set[int] = set()
    done: list[int] = []

    @app.task(name="s.doomed", queue="s", retry=FAST)
    async def doomed(job: Job) -> None:
        done.append(job.n)
        raise ValueError("the disk is on fire")

    @app.task(name="s.flaky", queue="s", retry=FAST)
    async def flaky(job: Job) -> None:
        done.append(job.n)
        if job.n not in seen:
            seen.add(job.n)
            raise ConnectionError("try again")

    async with running(Worker(app, concurrency=4)):
        with sentry_sdk.start_transaction(op="http.server", name="POST /orders") as request:
            doomed_id = await app.send(doomed, Job(n=1))
            flaky_id = await app.send(flaky, Job(n=2))
        await wait_for(lambda: len(done) == 4)
        await wait_for(lambda: len(ingest.of_type("transaction")) >= 1)
    sentry_sdk.flush(timeout=30)

    errors = ingest.of_type("event")
    assert len(errors) == 1, "one event: the dead letter; no event for the retry that recovered"
    error = errors[0]
    assert error["exception"]["values"][-1]["type"] == "ValueError"
    assert error["tags"]["task.name"] == "s.doomed"
    assert error["tags"]["task.id"] == doomed_id
    assert error["tags"]["task.queue"] == "s"
    assert error["tags"]["task.attempt"] == "2"
    assert error["contexts"]["task"]["payload_size"] == len(Job(n=1).model_dump_json())
    assert error["contexts"]["trace"]["trace_id"] == request.trace_id

    transactions = ingest.of_type("transaction")
    sent = next(t for t in transactions if t["transaction"] == "POST /orders")
    publishes = [s for s in sent["spans"] if s["op"] == "queue.publish"]
    assert {s["data"]["messaging.message.id"] for s in publishes} == {doomed_id, flaky_id}
    assert {s["data"]["messaging.destination.name"] for s in publishes} == {"s"}
    assert all(s["data"]["messaging.message.body.size"] > 0 for s in publishes)
    assert all(s["data"]["messaging.system"] == "rabbitmq" for s in publishes)

    processed = [t for t in transactions if t["contexts"]["trace"]["op"] == "queue.process"]
    assert len(processed) == 4, "one transaction per attempt"
    assert {t["contexts"]["trace"]["trace_id"] for t in processed} == {request.trace_id}
    publish_spans = {s["span_id"] for s in publishes}
    assert {t["contexts"]["trace"]["parent_span_id"] for t in processed} == publish_spans
    by_attempt = sorted(
        (data(t)["messaging.message.id"], data(t)["messaging.message.retry.count"])
        for t in processed
    )
    assert by_attempt == sorted([(doomed_id, 0), (doomed_id, 1), (flaky_id, 0), (flaky_id, 1)])
    for t in processed:
        assert data(t)["messaging.destination.name"] == "s"
        assert data(t)["messaging.system"] == "rabbitmq"
        assert data(t)["messaging.message.body.size"] == len(Job(n=1).model_dump_json())
        assert data(t)["messaging.message.receive.latency"] >= 0
    flaky_ok = [
        t
        for t in processed
        if data(t)["messaging.message.id"] == flaky_id
        and data(t)["messaging.message.retry.count"] == 1
    ]
    assert flaky_ok[0]["contexts"]["trace"]["status"] == "ok"


async def test_report_retries_reports_every_failed_attempt(
    make_app: Callable[..., App], ingest: Envelopes
) -> None:
    sentry_sdk.init(dsn=ingest.dsn)
    app = make_app(middleware=[SentryMiddleware(report_retries=True)])
    seen: set[int] = set()
    done: list[int] = []

    @app.task(name="s.flaky", queue="s", retry=FAST)
    async def flaky(job: Job) -> None:
        done.append(job.n)
        if job.n not in seen:
            seen.add(job.n)
            raise ConnectionError("try again")

    async with running(Worker(app, concurrency=4)):
        await app.send(flaky, Job(n=2))
        await wait_for(lambda: len(done) == 2)
    sentry_sdk.flush(timeout=30)
    errors = ingest.of_type("event")
    assert [e["tags"]["task.attempt"] for e in errors] == ["1"]
    assert not ingest.of_type("transaction"), "no tracing without a sample rate"


async def test_worker_sentry_dsn_flag(
    make_app: Callable[..., App],
    spawn_worker: Spawn,
    ingest: Envelopes,
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger"
    proc, output, _ = await start_ops_worker(
        spawn_worker, path, env={"LEVERET_SENTRY_DSN": ingest.dsn}
    )
    app = make_app()
    app.add(fail)
    task_id = await app.send(fail, Sleep(seconds=0))
    await wait_for(lambda: events(path)["start"] == 1)
    await wait_for(lambda: len(ingest.of_type("event")) == 1, timeout=20)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0, output.text
    event = ingest.of_type("event")[0]
    assert event["tags"]["task.id"] == task_id
    assert event["tags"]["task.name"] == "ops.fail"
    assert event["exception"]["values"][-1]["type"] == "Permanent"


async def test_an_outbox_row_keeps_the_sentry_trace_it_was_added_in(
    make_app: Callable[..., App], ingest: Envelopes, postgres_url: str, outbox_table: str
) -> None:
    sentry_sdk.init(dsn=ingest.dsn, traces_sample_rate=1.0)
    service = make_app(middleware=[SentryMiddleware()])
    service.add(job)
    outbox = Outbox(service, table=outbox_table)

    def request() -> tuple[str, str]:
        with sentry_sdk.start_transaction(name="checkout", op="http.server") as tx:
            with psycopg.connect(postgres_url) as conn:
                outbox.add(conn, job, Job(n=1))
            return tx.trace_id, tx.span_id

    trace_id, span_id = await asyncio.to_thread(request)
    (row,) = await rows(postgres_url, outbox_table)
    headers = row["headers"] if isinstance(row["headers"], dict) else json.loads(row["headers"])
    assert headers["sentry-trace"].startswith(f"{trace_id}-{span_id}")
    assert f"sentry-trace_id={trace_id}" in headers["baggage"]
