"""OpenTelemetry across two processes: this test sends, a ``leveret worker`` runs the
tasks; each process exports its spans (the SDK's in-memory and console exporters).
A request's trace also reaches tasks sent from a sync thread, and through the outbox."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from leveret import App, Worker
from leveret.otel import OpenTelemetryMiddleware
from leveret.outbox import Outbox
from tests.apps.otel_app import doomed, flaky, ok
from tests.apps.outbox_app import job
from tests.support.models import Job
from tests.support.outbox import relaying
from tests.support.waiting import wait_for
from tests.support.workers import Spawn, running


@pytest.fixture
def exporter() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider, memory
    provider.shutdown()


def worker_spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def hex_id(value: int, width: int) -> str:
    return f"0x{value:0{width}x}"


async def test_a_send_and_its_attempts_are_one_trace_across_processes(
    make_app: Callable[..., App],
    spawn_worker: Spawn,
    tmp_path: Path,
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, memory = exporter
    app = make_app()
    for task in (ok, flaky, doomed):
        app.add(task)
    OpenTelemetryMiddleware(provider).install(app)
    await app.declare()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("checkout"):
        ids = {
            "ok": await app.send(ok, Job(n=1)),
            "flaky": await app.send(flaky, Job(n=2)),
            "doomed": await app.send(doomed, Job(n=3)),
        }
    spans_file = tmp_path / "spans.jsonl"
    spawn_worker("tests.apps.otel_app:app", env={"OTEL_SPANS_FILE": str(spans_file)})

    def by_id(task_id: str) -> list[dict[str, Any]]:
        return [
            s
            for s in worker_spans(spans_file)
            if s["attributes"].get("messaging.message.id") == task_id
        ]

    await wait_for(
        lambda: (
            len(by_id(ids["ok"])) == 1
            and len(by_id(ids["flaky"])) == 3
            and len(by_id(ids["doomed"])) == 1
        ),
        timeout=30,
        what="the worker's spans: 1 for ok, 3 for flaky, 1 for doomed",
    )
    published = {
        s.attributes["messaging.message.id"]: s
        for s in memory.get_finished_spans()
        if s.kind is SpanKind.PRODUCER
    }
    assert set(published) == set(ids.values())
    request = next(s for s in memory.get_finished_spans() if s.name == "checkout")
    exchange = f"{app.settings.namespace}.tasks"
    for name, task_id in ids.items():
        send = published[task_id]
        assert send.name == f"publish {exchange}"
        assert send.parent is not None
        assert send.parent.span_id == request.context.span_id
        assert send.attributes["messaging.system"] == "rabbitmq"
        assert send.attributes["messaging.operation.type"] == "send"
        assert send.attributes["messaging.destination.name"] == exchange
        assert send.attributes["messaging.rabbitmq.destination.routing_key"] == "otel"
        for attempt in by_id(task_id):
            # every attempt is a child of the send, in the request's trace
            assert attempt["context"]["trace_id"] == hex_id(request.context.trace_id, 32), name
            assert attempt["parent_id"] == hex_id(send.context.span_id, 16), name
            assert attempt["kind"] == "SpanKind.CONSUMER"
            assert attempt["name"] == "process otel"
            assert attempt["attributes"]["messaging.operation.type"] == "process"
            assert attempt["attributes"]["messaging.system"] == "rabbitmq"
            assert attempt["attributes"]["leveret.task.name"] == f"otel.{name}"

    (succeeded,) = by_id(ids["ok"])
    assert succeeded["status"]["status_code"] == "UNSET"
    assert succeeded["links"] == []

    attempts = sorted(by_id(ids["flaky"]), key=lambda s: s["attributes"]["leveret.task.attempt"])
    assert [a["attributes"]["leveret.task.attempt"] for a in attempts] == [1, 2, 3]
    assert [a["attributes"]["leveret.task.outcome"] for a in attempts] == [
        "retried",
        "retried",
        "succeeded",
    ]
    assert attempts[0]["links"] == []
    for before, after in pairwise(attempts):
        (link,) = after["links"]
        assert link["context"]["span_id"] == before["context"]["span_id"]
        assert link["context"]["trace_id"] == before["context"]["trace_id"]

    (dead,) = by_id(ids["doomed"])
    assert dead["status"]["status_code"] == "ERROR"
    (event,) = [e for e in dead["events"] if e["name"] == "dead-lettered"]
    assert event["attributes"]["leveret.reason"] == "failed-permanently"
    assert event["attributes"]["exception.type"] == "Permanent"


def kind(memory: InMemorySpanExporter, of: SpanKind) -> list[ReadableSpan]:
    return [s for s in memory.get_finished_spans() if s.kind is of]


async def test_a_sync_send_continues_the_callers_trace(
    make_app: Callable[..., App], exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    tracer_provider, memory = exporter
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
    exporter: tuple[TracerProvider, InMemorySpanExporter],
    postgres_url: str,
    outbox_table: str,
) -> None:
    tracer_provider, memory = exporter
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
