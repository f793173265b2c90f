"""A request's trace reaches its tasks however they are sent: from a sync thread
through the background loop, and through the outbox, written in the request and
published later by the relay."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator

import psycopg
import pytest
import sentry_sdk
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from leveret import App, Worker
from leveret.ops.sentry import SentryMiddleware
from leveret.otel import OpenTelemetryMiddleware
from leveret.outbox import Outbox
from tests.apps.ops_sentry import Envelopes
from tests.apps.outbox_app import job
from tests.support.models import Job
from tests.support.outbox import relaying, rows
from tests.support.waiting import wait_for
from tests.support.workers import running


@pytest.fixture
def provider() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider, memory
    provider.shutdown()


def kind(memory: InMemorySpanExporter, of: SpanKind) -> list[ReadableSpan]:
    return [s for s in memory.get_finished_spans() if s.kind is of]


async def test_a_sync_send_continues_the_callers_trace(
    make_app: Callable[..., App], provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    tracer_provider, memory = provider
    app = make_app()
    app.add(job)
    OpenTelemetryMiddleware(tracer_provider).install(app)
    await app.declare()
    tracer = tracer_provider.get_tracer("test")

    def view() -> str:
        with tracer.start_as_current_span("request"):
            return app.sync.send(job, Job(n=1))

    try:
        task_id = await asyncio.to_thread(view)
    finally:
        await asyncio.to_thread(app.sync.close)
    (request,) = [s for s in memory.get_finished_spans() if s.name == "request"]
    (send,) = kind(memory, SpanKind.PRODUCER)
    assert send.attributes is not None
    assert send.attributes["messaging.message.id"] == task_id
    assert send.parent is not None, "the send ran outside the caller's context"
    assert send.parent.span_id == request.context.span_id


async def test_an_outbox_row_carries_the_request_trace_into_the_task(
    make_app: Callable[..., App],
    provider: tuple[TracerProvider, InMemorySpanExporter],
    postgres_url: str,
    outbox_table: str,
) -> None:
    tracer_provider, memory = provider
    service, relay_app, worker_app = make_app(), make_app(), make_app()
    for app in (service, relay_app, worker_app):
        app.add(job)
        OpenTelemetryMiddleware(tracer_provider).install(app)
    ran: list[int] = []

    @worker_app.handle(job)
    async def handle(payload: Job) -> None:
        ran.append(payload.n)

    await worker_app.declare()
    outbox = Outbox(service, table=outbox_table)
    tracer = tracer_provider.get_tracer("test")

    def request() -> str:
        with tracer.start_as_current_span("checkout"), psycopg.connect(postgres_url) as conn:
            return outbox.add(conn, job, Job(n=7))

    task_id = await asyncio.to_thread(request)
    (checkout,) = [s for s in memory.get_finished_spans() if s.name == "checkout"]
    assert kind(memory, SpanKind.PRODUCER) == [], "adding a row is not a publish"

    async with running(Worker(worker_app)), relaying(relay_app, postgres_url, outbox_table):
        await wait_for(lambda: ran == [7], what="the task from the outbox ran")
        await wait_for(lambda: len(kind(memory, SpanKind.CONSUMER)) == 1)

    (publish,) = kind(memory, SpanKind.PRODUCER)
    (process,) = kind(memory, SpanKind.CONSUMER)
    assert publish.attributes is not None
    assert publish.attributes["messaging.message.id"] == task_id
    # request -> the relay's publish -> the task's attempt, one trace
    assert publish.parent is not None
    assert publish.parent.span_id == checkout.context.span_id
    assert publish.context.trace_id == checkout.context.trace_id
    assert process.parent is not None
    assert process.parent.span_id == publish.context.span_id
    assert process.context.trace_id == checkout.context.trace_id


async def test_an_outbox_row_keeps_the_sentry_trace_it_was_added_in(
    make_app: Callable[..., App], postgres_url: str, outbox_table: str
) -> None:
    with Envelopes() as envelopes:
        sentry_sdk.init(dsn=envelopes.dsn, traces_sample_rate=1.0)
        try:
            service = make_app(middleware=[SentryMiddleware()])
            service.add(job)
            outbox = Outbox(service, table=outbox_table)

            def request() -> tuple[str, str]:
                with sentry_sdk.start_transaction(name="checkout", op="http.server") as tx:
                    with psycopg.connect(postgres_url) as conn:
                        outbox.add(conn, job, Job(n=1))
                    return tx.trace_id, tx.span_id

            trace_id, span_id = await asyncio.to_thread(request)
        finally:
            sentry_sdk.get_client().close()
            sentry_sdk.init()  # no DSN: an inactive client again for the next tests
    (row,) = await rows(postgres_url, outbox_table)
    headers = row["headers"] if isinstance(row["headers"], dict) else json.loads(row["headers"])
    assert headers["sentry-trace"].startswith(f"{trace_id}-{span_id}")
    assert f"sentry-trace_id={trace_id}" in headers["baggage"]
