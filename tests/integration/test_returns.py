"""Deliveries that come back unsettled are counted, run alone, and stopped at the limit.

A classic queue only flags a redelivery: the worker turns it into a copy carrying
the count (``leveret-returns``). Each step shows in the task's context, in the dead
letter and in ``leveret_returned_deliveries_total``.
"""

from __future__ import annotations

from collections.abc import Callable

import aio_pika

from leveret import App, TaskContext, Worker
from leveret.amqp.topology import Names
from leveret.ops.metrics import Metrics
from tests.support.deadletters import dead_letters
from tests.support.models import Job
from tests.support.waiting import wait_for
from tests.support.workers import running

LIMIT = 3


async def test_a_returned_task_is_counted_run_alone_and_stopped_at_the_limit(
    make_app: Callable[..., App],
) -> None:
    app = make_app()
    app.queue("r", type="classic", delivery_limit=LIMIT)
    seen: dict[int, TaskContext] = {}

    @app.task(name="r.job", queue="r")
    async def job(payload: Job, ctx: TaskContext) -> None:
        seen[payload.n] = ctx

    await app.declare()
    names = Names(app.settings.namespace)
    connection = await app.connector.get()

    # 1: taken by a consumer that goes away without settling it, so it is redelivered.
    await app.send(job, Job(n=1))
    channel = await connection.channel()
    queue = await channel.get_queue(names.work_queue("r"))
    held = await queue.get(timeout=5)
    assert held is not None
    await channel.close()

    # 2 and 3: copies put back by a worker before, with the count they carried.
    channel = await connection.channel()
    exchange = await channel.get_exchange(names.tasks_exchange)
    for n, returns in ((2, 2), (3, LIMIT + 1)):
        await exchange.publish(
            aio_pika.Message(
                Job(n=n).model_dump_json().encode(),
                type="r.job",
                message_id=f"task-{n}",
                content_type="application/json",
                headers={"leveret-returns": returns},
            ),
            routing_key="r",
        )
    await channel.close()

    worker = Worker(app, concurrency=4)
    metrics = Metrics().install(app).watch(worker)
    async with running(worker):
        await wait_for(lambda: {1, 2} <= set(seen))
        dead = await dead_letters(app, "r", 1)

    assert seen[1].redelivered
    assert seen[1].delivery_count == 1
    assert seen[2].redelivered
    assert seen[2].delivery_count == 2
    assert 3 not in seen, "over the limit: dead-lettered without running"
    assert dead[0].message_id == "task-3"
    assert dead[0].headers["leveret-reason"] == "delivery-limit"
    assert "over the delivery limit of 3" in str(dead[0].headers["leveret-error-message"])

    def returned(action: str) -> float:
        value = metrics.registry.get_sample_value(
            "leveret_returned_deliveries_total", {"queue": "r", "action": action}
        )
        return value or 0.0

    assert returned("counted") == 1  # the redelivery, turned into a counted copy
    assert returned("ran-alone") == 1  # task 2: two returns
    assert returned("put-back") == 0
