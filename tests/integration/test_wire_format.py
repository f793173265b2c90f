"""A service in another language can publish a task with any AMQP client.

This test uses plain aio-pika and only what the README's "Wire format" section says:
exchange ``<namespace>.tasks``, routing key = queue name, ``type`` = task name,
``message_id`` = task id, a JSON body, persistent, optional priority and headers.
"""

from __future__ import annotations

import aio_pika
from pydantic import BaseModel

from leveret import App, Task, TaskContext, Worker
from tests.support.waiting import wait_for
from tests.support.workers import running


class Invoice(BaseModel):
    invoice_id: int
    amount: str


async def test_a_plain_amqp_publish_runs_as_a_typed_task(make_app, amqp_url: str) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    namespace = app.settings.namespace
    runs: list[tuple[Invoice, TaskContext]] = []

    @app.handle(Task("billing.invoice", Invoice, queue="billing"))
    async def handle(invoice: Invoice, ctx: TaskContext) -> None:
        runs.append((invoice, ctx))

    async with running(Worker(app)):
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await channel.get_exchange(f"{namespace}.tasks", ensure=False)
            await exchange.publish(
                aio_pika.Message(
                    body=b'{"invoice_id": 7, "amount": "12.50"}',
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    type="billing.invoice",
                    message_id="go-service-0001",
                    priority=5,
                    app_id="billing-go",
                    headers={
                        "leveret-attempt": 1,
                        "traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01",
                    },
                ),
                routing_key="billing",
                mandatory=True,
            )
        await wait_for(lambda: len(runs) == 1)

    invoice, ctx = runs[0]
    assert invoice == Invoice(invoice_id=7, amount="12.50")
    assert ctx.task_id == "go-service-0001"
    assert ctx.attempt == 1
    assert ctx.headers["traceparent"].startswith("00-abab")
