"""/metrics after a known workload: every count is what the workload implies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from leveret import App, Permanent, RetryPolicy, Worker
from leveret.ops.health import HealthServer, worker_routes
from leveret.ops.metrics import Metrics, merge
from tests.support.models import Job
from tests.support.ops import metric, scrape
from tests.support.waiting import wait_for
from tests.support.workers import running

FAST = RetryPolicy(max_attempts=2, base=0.01, jitter="none")


async def test_counts_after_a_known_workload(make_app: Callable[..., App]) -> None:
    app = make_app()
    finished: list[str] = []
    flaky_seen: set[int] = set()
    gate = asyncio.Event()

    @app.task(name="m.ok", queue="m")
    async def ok(job: Job) -> None:
        finished.append("ok")

    @app.task(name="m.flaky", queue="m", retry=FAST)
    async def flaky(job: Job) -> None:
        if job.n not in flaky_seen:
            flaky_seen.add(job.n)
            raise ConnectionError("first attempt fails")
        finished.append("flaky")

    @app.task(name="m.broken", queue="m", retry=FAST)
    async def broken(job: Job) -> None:
        finished.append("broken")
        raise ValueError("always")

    @app.task(name="m.refused", queue="m")
    async def refused(job: Job) -> None:
        finished.append("refused")
        raise Permanent("never")

    @app.task(name="m.held", queue="held")
    async def held(job: Job) -> None:
        await gate.wait()
        finished.append("held")

    worker = Worker(app, concurrency=8)
    metrics = Metrics().install(app).watch(worker)
    server = await HealthServer(worker_routes(worker, metrics), host="127.0.0.1", port=0).start()
    stranger = make_app()  # knows none of the contracts: the worker validates
    try:
        async with running(worker):
            await app.send_many(ok, [Job(n=i) for i in range(5)])
            await app.send_many(flaky, [Job(n=1), Job(n=2)])
            await app.send(broken, Job(n=0))
            await app.send(refused, Job(n=0))
            await stranger.send_by_name("m.ok", {"n": "not a number"}, queue="m")
            await stranger.send_by_name("m.nobody", {"n": 1}, queue="m")
            await app.send_many(held, [Job(n=i) for i in range(3)])
            await wait_for(lambda: len(finished) == 5 + 2 + 2 + 1)
            await wait_for(lambda: metric_sum(metrics, "leveret_messages_rejected_total") == 2)

            text = await scrape(server.port)
            assert metric(text, "leveret_tasks_in_progress", queue="held") == 3
            assert metric(text, "leveret_tasks_in_progress", queue="m") == 0
            assert metric(text, "leveret_worker_ready") == 1
            gate.set()
            await wait_for(lambda: finished.count("held") == 3)
            await wait_for(lambda: held_recorded(metrics), what="the held tasks' outcomes")
            text = await scrape(server.port)
    finally:
        await server.close()

    def processed(task: str, outcome: str) -> float:
        return metric(text, "leveret_tasks_processed_total", task=task, queue="m", outcome=outcome)

    assert metric(text, "leveret_tasks_published_total", task="m.ok", queue="m") == 5
    assert metric(text, "leveret_tasks_published_total", task="m.flaky", queue="m") == 2
    assert metric(text, "leveret_tasks_published_total", task="m.held", queue="held") == 3
    assert processed("m.ok", "succeeded") == 5
    assert processed("m.flaky", "retried") == 2
    assert processed("m.flaky", "succeeded") == 2
    assert processed("m.broken", "retried") == 1
    assert processed("m.broken", "dead-lettered") == 1
    assert processed("m.refused", "failed-permanently") == 1
    assert processed("m.ok", "abandoned") == 0
    assert metric(text, "leveret_messages_rejected_total", queue="m", reason="invalid-payload") == 1
    assert metric(text, "leveret_messages_rejected_total", queue="m", reason="unknown-task") == 1
    assert metric(text, "leveret_task_duration_seconds_count", task="m.flaky", queue="m") == 4
    assert metric(text, "leveret_task_queue_wait_seconds_count", task="m.flaky", queue="m") == 4
    assert metric(text, "leveret_task_duration_seconds_count", task="m.held", queue="held") == 3
    assert metric(text, "leveret_task_duration_seconds_sum", task="m.ok", queue="m") > 0
    assert metric(text, "leveret_tasks_in_progress", queue="held") == 0
    # 12 sends by this app, 3 retry copies and 4 dead letters (2 of them rejections).
    assert metric(text, "leveret_publish_confirm_seconds_count") == 12 + 3 + 4
    assert metric(text, "leveret_reconnects_total") == 0
    assert "_created" not in text


def held_recorded(metrics: Metrics) -> bool:
    """The held tasks' ends are counted: a handler returns before its outcome is."""
    text = metrics.render().decode()
    done = metric(text, "leveret_task_duration_seconds_count", task="m.held", queue="held")
    return done == 3 and metric(text, "leveret_tasks_in_progress", queue="held") == 0


def metric_sum(metrics: Metrics, name: str) -> float:
    text = metrics.render().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")
    )


def test_merge_adds_up_processes() -> None:
    def exposition(done: int, ready: int) -> str:
        registry = CollectorRegistry()
        counter = Counter("leveret_tasks_processed", "d", ["task"], registry=registry)
        counter.labels("a").inc(done)
        hist = Histogram("leveret_task_duration_seconds", "d", ["task"], registry=registry)
        hist.labels("a").observe(0.2 * done)
        Gauge("leveret_worker_ready", "d", registry=registry).set(ready)
        return generate_latest(registry).decode()

    merged = merge([exposition(2, 1), exposition(3, 1)]).decode()
    assert metric(merged, "leveret_tasks_processed_total", task="a") == 5
    assert metric(merged, "leveret_task_duration_seconds_count", task="a") == 2
    assert metric(merged, "leveret_task_duration_seconds_bucket", task="a", le="0.5") == 1
    assert metric(merged, "leveret_worker_ready") == 1
    assert metric(merge([exposition(1, 1), exposition(1, 0)]).decode(), "leveret_worker_ready") == 0
    assert "_created" not in merged


def test_metric_names_are_the_contract() -> None:
    names = {m.name for m in Metrics().registry.collect()}
    assert names >= {
        "leveret_tasks_published",
        "leveret_tasks_processed",
        "leveret_messages_rejected",
        "leveret_task_duration_seconds",
        "leveret_task_queue_wait_seconds",
        "leveret_publish_confirm_seconds",
    }
